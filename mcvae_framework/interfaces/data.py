"""The dataset interface."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
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
    #: optional :class:`ParticleStack` the items were read from (a cryo-EM particle stack):
    #: ``mcvae predict --out FILE.star`` then points to its particles, in its pixels.
    particle_stack: "ParticleStack | None" = None

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


@dataclass
class ParticleStack:
    """Where a dataset's items come from when they are sections of an MRC particle stack:
    what a STAR file (``mcvae predict --out FILE.star``) and the class averages' ``.mrcs``
    need to know about the source.

    :param path: the ``.mrcs`` file; item ``i`` is its section ``source_indices[i]``.
    :param side: the side of its particles in pixels (before any downsampling).
    :param pixel_size: Angstrom per pixel of its particles (``None``: unknown).
    :param columns: optional per-particle columns (one array per column, indexed by the
        item's source position) carried into written STAR files: the columns of a user's
        own particle STAR file (its ``rlnImageName`` then names each particle).
    :param optics: optional optics table (one array per column) written instead of the
        framework's minimal one.
    """

    path: str
    side: int
    pixel_size: float | None = None
    columns: dict | None = None
    optics: dict | None = None

    def columns_for(self, positions) -> dict:
        """The carried columns of the particles at ``positions`` (``{}`` without any)."""
        if not self.columns:
            return {}
        positions = np.asarray(positions, dtype=np.int64)
        return {name: np.asarray(values)[positions] for name, values in self.columns.items()}
