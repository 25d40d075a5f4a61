"""What a dataset plugin shares with the built-in datasets (all of them are made of it):
the common config fields (:class:`DatasetConfig`: ``limit``, ``transform``, ``storage``;
:class:`SeededSplitConfig` adds ``test_fraction`` and ``split_seed``), seeded splits,
class-balanced limits, and :func:`build_split`, which turns a source read by position into
the dataset of one split -- held in memory (:class:`InMemoryImageDataset`) or streamed
(:mod:`mcvae_framework.interfaces.streaming`), moved by the seeded ``transform``
(:mod:`mcvae_framework.interfaces.transform`), ``split="all"`` included.

A dataset of ``.npy`` files in a few lines (``docs/plugins.md``, "A dataset of your own")::

    class NpyFolderConfig(SeededSplitConfig):
        type: Literal["npy_folder"] = "npy_folder"
        path: str
        _resolve = field_validator("path")(resolve_path)

    def make_npy_folder(config, split="train"):
        check_split(split, config.type)
        images = np.stack([np.load(p) for p in sorted(Path(config.path).glob("*.npy"))])
        parts = seeded_split(len(images), None, config.test_fraction, config.split_seed, config.path)
        return build_split(config, split, parts, array_reader(images, scale=float(images.max())), None,
                           n_classes=None, sizes={s: len(parts[s]) for s in SPLITS})
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch
from pydantic import Field, PositiveInt, ValidationInfo

from ..config.registry import ComponentConfig
from ..errors import ConfigError, DataError
from .data import ALL, SPLITS, ImageDataset, sizes_with_all
from .streaming import SourceReader, StreamingImageDataset, merge_streaming, wants_streaming
from .transform import TransformConfig, transform_images


def resolve_path(value: Optional[str], info: ValidationInfo) -> Optional[str]:
    """A ``path``-like field, relative paths resolved against the config file's folder.

    The core passes the folder as the validation context ``config_dir`` when it validates a
    config file; without one (a config dict built in Python) the path stays as written and
    is read relative to the current directory. ``~`` is expanded either way.
    """
    if value is None:
        return None
    path = Path(value).expanduser()
    base = (info.context or {}).get("config_dir") if info is not None else None
    if not path.is_absolute() and base is not None:
        path = Path(os.path.normpath(Path(base) / path))
    return str(path)


class DatasetConfig(ComponentConfig):
    """The fields every built-in dataset takes (a dataset plugin's config derives from it
    to take them too): ``limit``, ``transform`` and ``storage``, which :func:`finish_dataset`
    and :func:`build_split` apply."""

    type: str
    limit: Optional[PositiveInt] = Field(
        None, description="keep only the first N images of each split (class-balanced where labels exist)"
    )
    transform: Optional[TransformConfig] = Field(
        None, description="move every image by a seeded pose of a group; items then carry canonical and pose"
    )
    storage: Literal["auto", "memory", "stream"] = Field(
        "auto", description="memory: read every image at build time and hold the split in memory (fastest for "
        "small data); stream: read and move images batch by batch as training asks for them (data larger than "
        "memory); auto: stream when the split's float32 images (moved and canonical) would exceed 1 GiB"
    )

    def own_files_section(self, path) -> dict:
        # a user's images are predicted as they are: no seeded moves, no `limit`
        return {**self.model_dump(mode="json", exclude={"transform", "limit"}), "path": str(path)}

    def data_kind(self) -> str | None:
        # every built-in dataset reads 2-D images, but those that say otherwise (arrays, mrc)
        return "image"

    def without_canonical_images(self) -> str | None:
        if self.transform is None:
            return "set a `transform` in the data section (its items then carry canonical images and poses)"
        return None

    def data_summary(self, dataset) -> dict[str, str]:
        if self.transform is None:
            return {}
        t = self.transform
        extra = ", ".join(f"{k}={v}" for k, v in (t.model_extra or {}).items())
        return {"transform": f"group {t.group}, seed {t.seed}, canvas {dataset.image_shape[-1]}"
                + (f", {extra}" if extra else "")}


class SeededSplitConfig(DatasetConfig):
    """Fields of datasets without an official train/test split."""

    test_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="share of each class (of all images when unlabelled) put in the test split"
    )
    split_seed: int = Field(0, description="seed of the train/test split")


def check_split(split: str, tag: str) -> str:
    """``split`` if it is ``train``, ``test`` or ``all``, else a :class:`ConfigError`."""
    if split not in SPLITS + (ALL,):
        raise ConfigError([("split", f"the {tag!r} dataset has splits train and test (and all: both, in "
                                     f"source order), got {split!r}")])
    return split


def seeded_split(n: int, labels: np.ndarray | None, test_fraction: float, seed: int,
                 source: str, allow_empty: bool = False) -> dict[str, np.ndarray]:
    """Indices of a seeded train/test split, stratified by label when labels exist.

    Each class (or the whole set when unlabelled) sends ``round(test_fraction * size)``
    images, drawn with ``numpy.random.default_rng(seed)``, to ``test``; indices keep the
    source order within each split.

    :param allow_empty: accept an empty split (when every image is wanted anyway).
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
        if len(idx) == 0 and not allow_empty:
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

    :param tensors: ``image`` (N, C, H, W) (or (N, C, D, H, W) volumes) float32 in ``[0, 1]``
        and optionally ``label`` (N,) int64, ``canonical`` (like ``image``), ``pose`` (N, dim)
        float32 and ``pose_component`` (N,) int64.
    :param split: ``train`` or ``test``.
    :param n_classes: number of label classes, ``None`` without labels.
    :param sizes: size of every split (after ``limit``).
    :param class_names: a name per class, when known.
    :param description: a short line saying where the data came from.
    :param source_indices: each item's position in the source (file, folder listing).
    :param item_names: each item's name (a file name), when the source has names.
    :param item_splits: each item's split, for the ``all`` split.
    """

    def __init__(self, tensors: dict[str, torch.Tensor], *, split: str, n_classes: int | None,
                 sizes: dict[str, int], class_names: list[str] | None = None, description: str = "",
                 source_indices=None, item_names: list[str] | None = None, item_splits: list[str] | None = None):
        self._tensors = tensors
        self.source_indices = [int(i) for i in source_indices] if source_indices is not None else None
        self.item_names = list(item_names) if item_names is not None else None
        self.item_splits = list(item_splits) if item_splits is not None else None
        self.image_shape = tuple(int(s) for s in tensors["image"].shape[1:])
        self.split = split
        self.n_classes = n_classes
        self.class_names = class_names
        self.description = description
        self._sizes = sizes_with_all(sizes)

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


class ScaleToUnit:
    """Raw ``(k, C, H, W)`` (or ``(k, H, W)``) rows to float32 in ``[0, 1]``: divided by
    ``scale`` and clamped, as :func:`to_unit_float` does for a whole split.

    :param spatial: spatial axes of an item, 2 (images) or 3 (volumes: ``(k, D, H, W)`` rows
        get their channel axis, ``(k, C, D, H, W)`` rows are kept).
    """

    def __init__(self, scale: float, spatial: int = 2):
        self.scale = float(scale)
        self.spatial = int(spatial)

    def __call__(self, rows: np.ndarray) -> torch.Tensor:
        rows = rows[:, None] if rows.ndim == self.spatial + 1 else rows
        return to_unit_float(rows, self.scale)


def array_reader(images: np.ndarray, scale: float) -> SourceReader:
    """A reader of an array already in memory (or memory-mapped and shared by ``fork``)."""
    shape = images.shape[1:] if images.ndim == 4 else (1, *images.shape[1:])
    return SourceReader(shape, ScaleToUnit(scale), source=images)


def finish_dataset(config: DatasetConfig, split: str, images, labels: np.ndarray | None, *, scale: float,
                   n_classes: int | None, sizes: dict[str, int], class_names: list[str] | None = None,
                   description: str = "", source_indices=None,
                   item_names: list[str] | None = None) -> InMemoryImageDataset:
    """Apply ``limit``, scale to ``[0, 1]`` floats, apply ``transform``, and wrap one split.

    :param images: the whole split, ``(N, C, H, W)`` numpy array or tensor, any dtype.
    :param labels: ``(N,)`` integer labels or ``None``.
    :param scale: the value that maps to 1.0 (255 for bytes).
    :param sizes: every split's size before ``limit``.
    :param source_indices: ``(N,)`` position of each image in the source (default ``0..N-1``).
    :param item_names: ``N`` names (file names), when the source has them.
    """
    keep = balanced_first(labels, images.shape[0], config.limit)
    source_indices = np.arange(images.shape[0]) if source_indices is None else np.asarray(source_indices)
    if len(keep) < images.shape[0]:
        images = images[torch.as_tensor(keep)] if isinstance(images, torch.Tensor) else images[keep]
        labels = labels[keep] if labels is not None else None
        source_indices = source_indices[keep]
        item_names = [item_names[i] for i in keep] if item_names is not None else None
    tensors = {"image": to_unit_float(images, scale)}
    if labels is not None:
        tensors["label"] = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if config.transform is not None:
        moved, canonical, pose, component = transform_images(tensors["image"], config.transform, split)
        tensors.update(image=moved, canonical=canonical, pose=pose)
        if component is not None:
            tensors["pose_component"] = component
    return InMemoryImageDataset(
        tensors, split=split, n_classes=n_classes, class_names=class_names, description=description,
        sizes={name: limited_size(sizes[name], config.limit) for name in SPLITS},
        source_indices=source_indices, item_names=item_names,
    )


def merge_splits(parts: dict[str, InMemoryImageDataset]) -> InMemoryImageDataset:
    """The ``all`` split: the items of ``parts`` (each built as its own split, so a
    ``transform`` gives every image the pose it has there) merged back into source order."""
    pieces = [d for d in parts.values() if len(d)]
    if not pieces:
        raise DataError("the data holds no images in either split")
    first = pieces[0]
    order = np.concatenate([np.asarray(d.source_indices) for d in pieces])
    perm = torch.as_tensor(np.argsort(order, kind="stable"))
    tensors = {key: torch.cat([d.as_tensors()[key] for d in pieces])[perm] for key in first.as_tensors()}
    names = [n for d in pieces for n in d.item_names] if first.item_names is not None else None
    splits = [d.split for d in pieces for _ in range(len(d))]
    sizes = {**first.split_sizes(), ALL: len(order)}
    return InMemoryImageDataset(
        tensors, split=ALL, n_classes=first.n_classes, class_names=first.class_names, sizes=sizes,
        description=first.description, source_indices=order[perm.numpy()],
        item_names=[names[i] for i in perm.tolist()] if names is not None else None,
        item_splits=[splits[i] for i in perm.tolist()],
    )


def build_split(config: DatasetConfig, split: str, parts: dict[str, np.ndarray], reader: SourceReader,
                labels: np.ndarray | None, *, names: list[str] | None = None, stream: bool | None = None,
                **common):
    """One split of a source that ``reader`` reads by position (only the images a split
    keeps after ``limit`` are read; all at once in memory, or batch by batch when
    streamed, see ``storage``); ``split="all"`` merges both.

    :param parts: the source indices of each split (from :func:`seeded_split`).
    :param labels: every source image's label, or ``None``.
    :param names: every source image's name, or ``None``.
    :param stream: stream or not (default: from ``config.storage`` and the split's size).
    :param common: ``n_classes``, ``sizes``, ``class_names``, ``description``.
    """
    kept = {}
    for name in SPLITS:
        idx = np.asarray(parts[name])
        kept[name] = idx[balanced_first(labels[idx] if labels is not None else None, len(idx), config.limit)]
    if stream is None:
        wanted = sum(len(v) for v in kept.values()) if split == ALL else len(kept[split])
        stream = wants_streaming(config.storage, wanted, reader.image_shape, config.transform)
    if split == ALL:
        built = {s: build_split(config, s, parts, reader, labels, names=names, stream=stream, **common)
                 for s in SPLITS if len(parts[s])}
        if not stream:
            return merge_splits(built)
        if not built:
            raise DataError("the data holds no images in either split")
        sizes = {**next(iter(built.values())).split_sizes(), ALL: sum(len(d) for d in built.values())}
        return merge_streaming(list(built.values()), sizes)
    idx = kept[split]
    split_labels = labels[idx] if labels is not None else None
    item_names = [names[i] for i in idx] if names is not None else None
    if stream:
        sizes = {name: limited_size(common["sizes"][name], config.limit) for name in SPLITS}
        return StreamingImageDataset.for_split(
            reader, idx, split=split, transform=config.transform, labels=split_labels, item_names=item_names,
            **{**common, "sizes": sizes},
        )
    # every image of the split is already in [0, 1]: finish_dataset's scale is 1
    return finish_dataset(config, split, reader.read(idx), split_labels, scale=1.0, source_indices=idx,
                          item_names=item_names, **common)
