"""The dataset interface."""

from __future__ import annotations

from torch import Tensor
from torch.utils.data import Dataset

#: the splits every dataset factory is asked for.
SPLITS = ("train", "test")
#: every item of the source, in source order (see :class:`ImageDataset`).
ALL = "all"


def sizes_with_all(sizes: dict[str, int]) -> dict[str, int]:
    """``sizes`` of the train and test splits, with ``all`` (their sum) added: what
    :meth:`ImageDataset.split_sizes` answers for a dataset that also offers ``split="all"``."""
    if ALL in sizes or not set(SPLITS) <= set(sizes):
        return dict(sizes)
    return {**sizes, ALL: sum(sizes[name] for name in SPLITS)}


class ImageDataset(Dataset):
    """A map-style dataset whose items are dicts.

    Always ``image`` (float32 in ``[0, 1]``, ``C x H x W``); when known also ``label``
    (int64 scalar), ``canonical`` (the un-moved image, same shape as ``image``) and
    ``pose`` (the true ``tau``, float32 ``(dim,)``). Every item of one dataset has the
    same keys, so the default collate function batches them.

    A factory is called with ``split="train"`` or ``split="test"``. It may also accept
    ``split="all"``: every item of the source in the source's own order (the order of a
    file, of a sorted folder listing), each item as it is in its own split. ``mcvae
    predict`` asks for ``all`` and falls back to ``train`` then ``test`` when a factory
    refuses it (raises :class:`~mcvae_framework.errors.ConfigError`).

    A dataset held in memory offers its stacked tensors through :meth:`as_tensors`. One
    read from disk returns ``None`` there and may define ``__getitems__(indices)``
    returning the list of those items: ``torch.utils.data.DataLoader`` then asks for a
    whole batch in one call, so a batch is read (and moved) at once.
    """

    #: ``(C, H, W)`` of every item's ``image``.
    image_shape: tuple[int, int, int]
    #: number of label classes, or ``None`` when the data has no labels.
    n_classes: int | None
    #: ``"train"`` or ``"test"``.
    split: str
    #: optional human-readable name of each label class (``None`` when unknown).
    class_names: list[str] | None = None
    #: optional name of each item, in item order: a file's path relative to its folder
    #: (``None`` when the source has no names). ``mcvae predict`` writes it as the first column.
    item_names: list[str] | None = None
    #: optional position of each item in its source (the index in an array file, in a
    #: folder listing); ``None`` means ``0..len-1``.
    source_indices: list[int] | None = None
    #: optional split of each item (``"train"``/``"test"``) for the ``all`` split.
    item_splits: list[str] | None = None

    def split_sizes(self) -> dict[str, int]:
        """Number of items of every split as this dataset's config yields them (after any
        ``limit``), e.g. ``{"train": 60000, "test": 10000, "all": 70000}``; ``len(self)``
        equals ``split_sizes()[self.split]``. A factory that accepts ``split="all"`` counts
        it too (:func:`sizes_with_all`), whichever split was built."""
        raise NotImplementedError

    def as_tensors(self) -> dict[str, Tensor] | None:
        """All items stacked, for datasets held in memory: the same keys as an item, each
        tensor with ``len(self)`` rows (row ``i`` equals item ``i``), so a trainer can cut
        batches straight from memory without a Python call per item.

        The tensors are the dataset's own storage: read them, do not modify them in place.

        :returns: the stacked tensors, or ``None`` (the default) when the dataset is not
            held in memory and must be read item by item.
        """
        return None
