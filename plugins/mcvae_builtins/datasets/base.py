"""What every built-in dataset shares: the common config fields, seeded splits,
class-balanced limits, and the in-memory dataset the factories return."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from pydantic import Field, PositiveInt

from mcvae_framework import ComponentConfig
from mcvae_framework.errors import ConfigError, DataError
from mcvae_framework.interfaces import ImageDataset

from .transform import TransformConfig, transform_images

SPLITS = ("train", "test")


class DataConfigBase(ComponentConfig):
    """Fields every built-in dataset takes."""

    type: str
    limit: Optional[PositiveInt] = Field(
        None, description="keep only the first N images of each split (class-balanced where labels exist)"
    )
    transform: Optional[TransformConfig] = Field(
        None, description="move every image by a seeded pose of a group; items then carry canonical and pose"
    )


class SeededSplitConfig(DataConfigBase):
    """Fields of datasets without an official train/test split."""

    test_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="share of each class (of all images when unlabelled) put in the test split"
    )
    split_seed: int = Field(0, description="seed of the train/test split")


def check_split(split: str, tag: str) -> str:
    """``split`` if it is ``train`` or ``test``, else a :class:`ConfigError`."""
    if split not in SPLITS:
        raise ConfigError([("split", f"the {tag!r} dataset has splits train and test, got {split!r}")])
    return split


def seeded_split(n: int, labels: np.ndarray | None, test_fraction: float, seed: int,
                 source: str) -> dict[str, np.ndarray]:
    """Indices of a seeded train/test split, stratified by label when labels exist.

    Each class (or the whole set when unlabelled) sends ``round(test_fraction * size)``
    images, drawn with ``numpy.random.default_rng(seed)``, to ``test``; indices keep the
    source order within each split.

    :raises DataError: when one split would be empty.
    """
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    test_parts = []
    for members in groups:
        n_test = int(round(test_fraction * len(members)))
        test_parts.append(members[rng.permutation(len(members))[:n_test]])
    is_test = np.zeros(n, dtype=bool)
    if test_parts:
        is_test[np.concatenate(test_parts)] = True
    out = {"train": np.flatnonzero(~is_test), "test": np.flatnonzero(is_test)}
    for name, idx in out.items():
        if len(idx) == 0:
            raise DataError(
                f"{source}: test_fraction={test_fraction} leaves the {name} split empty ({n} images in all); "
                "choose a test_fraction that gives both splits images"
            )
    return out


def balanced_first(labels: np.ndarray | None, n: int, limit: int | None) -> np.ndarray:
    """Indices of the first ``limit`` of ``n`` items, in source order.

    With labels the classes take turns (round robin, each class its earliest items), so
    every class gets ``limit // n_classes`` items or one more, unless it runs out.
    """
    if limit is None or limit >= n:
        return np.arange(n)
    if labels is None:
        return np.arange(limit)
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    starts = np.searchsorted(sorted_labels, sorted_labels, side="left")
    rank_in_class = np.empty(n, dtype=np.int64)
    rank_in_class[order] = np.arange(n) - starts
    class_index = np.searchsorted(np.unique(labels), labels)
    # Round robin = sort by (rank within the class, class).
    chosen = np.lexsort((class_index, rank_in_class))[:limit]
    return np.sort(chosen)


def limited_size(n: int, limit: int | None) -> int:
    return n if limit is None else min(n, limit)


def to_unit_float(images: np.ndarray | torch.Tensor, scale: float) -> torch.Tensor:
    """``images / scale`` as contiguous float32 clamped to ``[0, 1]``."""
    t = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    return (t.to(torch.float32) / scale).clamp_(0.0, 1.0).contiguous()


class InMemoryImageDataset(ImageDataset):
    """A dataset held in memory as stacked tensors; ``__getitem__`` is one indexing per key.

    :param tensors: ``image`` (N, C, H, W) float32 in ``[0, 1]`` and optionally ``label``
        (N,) int64, ``canonical`` (like ``image``), ``pose`` (N, dim) float32.
    :param split: ``train`` or ``test``.
    :param n_classes: number of label classes, ``None`` without labels.
    :param sizes: size of every split (after ``limit``).
    :param class_names: a name per class, when known.
    :param description: a short line saying where the data came from.
    """

    def __init__(self, tensors: dict[str, torch.Tensor], *, split: str, n_classes: int | None,
                 sizes: dict[str, int], class_names: list[str] | None = None, description: str = ""):
        self._tensors = tensors
        self.image_shape = tuple(int(s) for s in tensors["image"].shape[1:])
        self.split = split
        self.n_classes = n_classes
        self.class_names = class_names
        self.description = description
        self._sizes = dict(sizes)

    def __len__(self) -> int:
        return self._tensors["image"].shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        # clone: an item must not keep the whole stacked storage alive (or shared with workers).
        return {key: value[index].clone() for key, value in self._tensors.items()}

    def split_sizes(self) -> dict[str, int]:
        return dict(self._sizes)

    def as_tensors(self) -> dict[str, torch.Tensor]:
        return dict(self._tensors)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.description}, split={self.split!r}, n={len(self)}, "
                f"image_shape={self.image_shape})")


def finish_dataset(config: DataConfigBase, split: str, images, labels: np.ndarray | None, *, scale: float,
                   n_classes: int | None, sizes: dict[str, int], class_names: list[str] | None = None,
                   description: str = "") -> InMemoryImageDataset:
    """Apply ``limit``, scale to ``[0, 1]`` floats, apply ``transform``, and wrap one split.

    :param images: the whole split, ``(N, C, H, W)`` numpy array or tensor, any dtype.
    :param labels: ``(N,)`` integer labels or ``None``.
    :param scale: the value that maps to 1.0 (255 for bytes).
    :param sizes: every split's size before ``limit``.
    """
    keep = balanced_first(labels, images.shape[0], config.limit)
    if len(keep) < images.shape[0]:
        images = images[torch.as_tensor(keep)] if isinstance(images, torch.Tensor) else images[keep]
        labels = labels[keep] if labels is not None else None
    tensors = {"image": to_unit_float(images, scale)}
    if labels is not None:
        tensors["label"] = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if config.transform is not None:
        moved, canonical, pose = transform_images(tensors["image"], config.transform, split)
        tensors.update(image=moved, canonical=canonical, pose=pose)
    return InMemoryImageDataset(
        tensors, split=split, n_classes=n_classes, class_names=class_names, description=description,
        sizes={name: limited_size(sizes[name], config.limit) for name in SPLITS},
    )
