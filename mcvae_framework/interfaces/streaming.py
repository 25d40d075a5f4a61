"""Streaming datasets: images read from their file when an item is asked for, and moved
by their seeded pose then, instead of all at build time.

Two pieces:

* a :class:`SourceReader` turns positions in a source (a memory-mapped array, an MRC
  stack, an HDF5 dataset, a folder listing) into ``(k, C, H, W)`` float32 images in
  ``[0, 1]``. It opens its file lazily and once per process, so that a ``DataLoader``
  worker or a DDP process never shares (or pickles) another process's file handle;
* a :class:`StreamingImageDataset` holds only what is small -- each item's position in
  the source, label and pose (drawn at build time with
  :func:`~mcvae_framework.interfaces.transform.draw_poses`, exactly as the in-memory path
  draws them) -- and reads a whole batch at once through ``__getitems__``, which
  ``torch.utils.data.DataLoader`` calls with a batch's indices.

Because a pose depends only on ``(transform.seed, split, index)``, an index gets the same
moved image in every worker, process and run, and the same as in memory.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

import numpy as np
import torch

from .data import ImageDataset, sizes_with_all

from .transform import (TransformConfig, build_transform_group, canvas_side, check_data_kind, draw_poses, move_images,
                        pad_to_canvas)

#: ``storage: auto`` streams a split whose float32 tensors would take more than this.
STREAM_ABOVE_BYTES = 1 << 30


def in_memory_bytes(n: int, image_shape: tuple[int, ...], transform: TransformConfig | None) -> int:
    """What ``n`` items of ``image_shape`` (``(C, H, W)``, or ``(C, D, H, W)`` for volumes)
    take in memory as float32 tensors (the moved and the canonical images when there is a
    transform)."""
    c, side, spatial = image_shape[0], image_shape[-1], len(image_shape) - 1
    if transform is None:
        return n * c * side**spatial * 4
    canvas = canvas_side(transform, side)
    return 2 * n * c * canvas**spatial * 4


def wants_streaming(storage: str, n: int, image_shape: tuple[int, int, int], transform) -> bool:
    """Whether a dataset of ``n`` items is streamed: ``storage`` says so, or it is ``auto``
    and the items would take more than :data:`STREAM_ABOVE_BYTES` in memory."""
    if storage != "auto":
        return storage == "stream"
    return in_memory_bytes(n, image_shape, transform) > STREAM_ABOVE_BYTES


class SourceReader:
    """Images of one source by position.

    :param image_shape: ``(C, H, W)`` of the images ``read`` returns.
    :param prepare: raw rows (a numpy array, ``k`` images in source order of the asked
        positions) to ``(k, C, H, W)`` float32 in ``[0, 1]``; picklable.
    :param open_source: returns the indexable source (``source[sorted positions]`` gives
        the raw rows); called once per process; picklable (a module-level function or a
        ``functools.partial`` of one). Leave it out when ``source`` is given.
    :param source: an array already in memory (kept, and pickled with the reader).
    """

    def __init__(self, image_shape, prepare: Callable[[np.ndarray], torch.Tensor], *,
                 open_source: Optional[Callable[[], Any]] = None, source: Any = None):
        if (open_source is None) == (source is None):
            raise ValueError("give open_source or source, not both")
        self.image_shape = tuple(int(s) for s in image_shape)
        self.prepare = prepare
        self._open = open_source
        self._source = source
        self._pid = os.getpid()

    def __getstate__(self):
        state = dict(self.__dict__)
        if self._open is not None:
            state["_source"] = None  # a file handle or memory map: each process opens its own
        return state

    def source(self):
        if self._open is not None and (self._source is None or self._pid != os.getpid()):
            self._source = self._open()
            self._pid = os.getpid()
        return self._source

    def read_raw(self, positions: np.ndarray) -> np.ndarray:
        """Raw rows at ``positions``, in that order. The source is read in increasing order
        without repeats (h5py requires it, and it reads a memory map front to back)."""
        unique, inverse = np.unique(positions, return_inverse=True)
        rows = np.asarray(self.source()[unique])
        return rows if np.array_equal(unique, positions) else rows[inverse.reshape(-1)]

    def read(self, positions) -> torch.Tensor:
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        if len(positions) == 0:
            return torch.empty(0, *self.image_shape)
        return self.prepare(self.read_raw(positions))


class StreamingImageDataset(ImageDataset):
    """One split read from its source as items are asked for (see the module doc).

    :param reader: the source's :class:`SourceReader`.
    :param positions: ``(N,)`` each item's position in the source.
    :param labels: ``(N,)`` int64 labels, or ``None``.
    :param poses: ``(N, dim)`` float32 poses, with ``transform``; else ``None``.
    :param pose_components: ``(N,)`` int64 components, for a transform group with a discrete
        part; else ``None``.
    :param item_splits: each item's split, for the ``all`` split.
    """

    def __init__(self, reader: SourceReader, positions, *, split: str, labels: np.ndarray | None,
                 transform: TransformConfig | None, poses: torch.Tensor | None, n_classes: int | None,
                 pose_components: torch.Tensor | None = None,
                 sizes: dict[str, int], class_names: list[str] | None = None, description: str = "",
                 item_names: list[str] | None = None, item_splits: list[str] | None = None):
        self.reader = reader
        self.positions = np.asarray(positions, dtype=np.int64)
        self.labels = None if labels is None else torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        self.transform = transform
        self.poses = poses
        self.pose_components = pose_components
        side = reader.image_shape[-1]
        self.canvas = canvas_side(transform, side) if transform is not None else side
        self.image_shape = (reader.image_shape[0],) + (self.canvas,) * (len(reader.image_shape) - 1)
        self.split = split
        self.n_classes = n_classes
        self.class_names = class_names
        self.description = description
        self.source_indices = self.positions.tolist()
        self.item_names = list(item_names) if item_names is not None else None
        self.item_splits = list(item_splits) if item_splits is not None else None
        self._sizes = sizes_with_all(sizes)
        self._group = None

    @classmethod
    def for_split(cls, reader: SourceReader, positions, *, split: str, transform, **kwargs):
        """A split's dataset with its poses drawn now (a pure function of seed, split and index)."""
        poses = components = None
        if transform is not None:
            canvas_side(transform, reader.image_shape[-1])  # refuse a small canvas before anything else
            group = build_transform_group(transform)
            check_data_kind(group, torch.empty(0, *reader.image_shape), transform.group)
            poses, components = draw_poses(transform, split, len(positions), group)
        return cls(reader, positions, split=split, transform=transform, poses=poses, pose_components=components,
                   **kwargs)

    def __getstate__(self):
        return {**self.__dict__, "_group": None}  # each process builds its own group

    def __len__(self) -> int:
        return len(self.positions)

    def split_sizes(self) -> dict[str, int]:
        return dict(self._sizes)

    def batch(self, indices) -> dict[str, torch.Tensor]:
        """The items at ``indices`` stacked, read and moved in one go."""
        index = np.asarray(indices, dtype=np.int64).reshape(-1)
        images = self.reader.read(self.positions[index])
        out = {"image": images}
        if self.labels is not None:
            out["label"] = self.labels[index]
        if self.transform is not None:
            if self._group is None:
                self._group = build_transform_group(self.transform)
            canonical = pad_to_canvas(images, self.canvas)
            pose = self.poses[index]
            component = self.pose_components[index] if self.pose_components is not None else None
            out.update(image=move_images(canonical, pose, self._group, component), canonical=canonical, pose=pose)
            if component is not None:
                out["pose_component"] = component
        return out

    def __getitems__(self, indices) -> list[dict[str, torch.Tensor]]:
        batch = self.batch(indices)
        return [{key: value[j] for key, value in batch.items()} for j in range(len(indices))]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} items")
        return self.__getitems__([index % len(self)])[0]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.description}, split={self.split!r}, n={len(self)}, "
                f"image_shape={self.image_shape})")


def merge_streaming(parts: list[StreamingImageDataset], sizes: dict[str, int]) -> StreamingImageDataset:
    """The ``all`` split of a source: the items of each split's dataset (poses included, as
    drawn for that split), in source order."""
    first = parts[0]
    positions = np.concatenate([p.positions for p in parts])
    order = np.argsort(positions, kind="stable")
    labels = None if first.labels is None else torch.cat([p.labels for p in parts]).numpy()[order]
    poses = None if first.poses is None else torch.cat([p.poses for p in parts])[torch.as_tensor(order)]
    components = None if first.pose_components is None else \
        torch.cat([p.pose_components for p in parts])[torch.as_tensor(order)]
    names = None if first.item_names is None else [n for p in parts for n in p.item_names]
    splits = [p.split for p in parts for _ in range(len(p))]
    return StreamingImageDataset(
        first.reader, positions[order], split="all", labels=labels, transform=first.transform, poses=poses,
        pose_components=components,
        n_classes=first.n_classes, sizes=sizes, class_names=first.class_names, description=first.description,
        item_names=[names[i] for i in order] if names is not None else None,
        item_splits=[splits[i] for i in order],
    )
