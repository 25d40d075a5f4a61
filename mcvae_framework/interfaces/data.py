"""The dataset interface."""

from __future__ import annotations

from torch.utils.data import Dataset


class ImageDataset(Dataset):
    """A map-style dataset whose items are dicts.

    Always ``image`` (float in ``[0, 1]``, ``C x H x W``); when known also ``label``
    (int64 scalar), ``canonical`` (the un-moved image, same shape as ``image``) and
    ``pose`` (the true ``tau``, float ``(dim,)``). Every item of one dataset has the same
    keys, so the default collate function batches them.
    """

    #: ``(C, H, W)`` of every item's ``image``.
    image_shape: tuple[int, int, int]
    #: number of label classes, or ``None`` when the data has no labels.
    n_classes: int | None
    #: ``"train"`` or ``"test"``.
    split: str

    def split_sizes(self) -> dict[str, int]:
        """Sizes of every split of the underlying data, e.g. ``{"train": 60000, "test": 10000}``."""
        raise NotImplementedError
