"""Images the invariant graph reads a chunk at a time, so that a large set is never held whole.

The graph touches its images twice: a seeded sample to fit the projection, then every image
once, in order, chunk by chunk, to compute its features (and those of its moved copies).
:class:`ImageChunks` gives exactly that access over any reader of positions: a memory-mapped
``.npy``, an MRC stack, an HDF5 dataset or a streamed dataset plugin (the trainer and
``mcvae graph`` build one over a dataset's batched reads). Only the features, ``(1 + M) x N``
rows of ``pca_dim`` numbers, grow with the set.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm


class ImageChunks:
    """``N`` images of shape ``(C, H, W)`` (or volumes of shape ``(C, D, H, W)``), read on demand.

    :param read: sorted positions (an int64 numpy array) to a ``(k, C, H, W)`` tensor.
    :param length: ``N``.
    :param image_shape: ``(C, H, W)`` (``(C, D, H, W)``).
    :param progress: a progress bar of this title counts the images read by slices (the
        graph's pass over all of them); ``None``: no bar.

    Indexing with an int, a slice (step 1) or a sorted 1-D index array returns float32 CPU
    tensors, as indexing a tensor of all the images would.
    """

    dtype = torch.float32
    device = torch.device("cpu")

    def __init__(self, read: Callable[[np.ndarray], torch.Tensor], length: int, image_shape,
                 progress: str | None = None):
        self.read = read
        self.length = int(length)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.progress = progress
        self._bar = None

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.length, *self.image_shape)

    @property
    def ndim(self) -> int:
        """4 for images, 5 for ``(C, D, H, W)`` volumes."""
        return 1 + len(self.image_shape)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, (int, np.integer)):
            return self[np.array([int(key) % self.length])][0]
        if isinstance(key, slice):
            start, stop, step = key.indices(self.length)
            if step != 1:
                raise IndexError("ImageChunks: slices must have step 1")
            positions = np.arange(start, stop, dtype=np.int64)
        else:
            positions = np.asarray(torch.as_tensor(key).cpu(), dtype=np.int64).reshape(-1)
        images = self.read(positions) if len(positions) else torch.empty(0, *self.image_shape)
        if isinstance(key, slice):
            self._count(len(positions))
        return torch.as_tensor(images).detach().to("cpu", torch.float32)

    def _count(self, read: int) -> None:
        if self.progress is None:
            return
        if self._bar is None:
            self._bar = tqdm(total=self.length, desc=self.progress, unit="img", leave=False)
        self._bar.update(read)
        if self._bar.n >= self.length:
            self._bar.close()
            self._bar = None

    def __repr__(self) -> str:
        return f"ImageChunks({self.length} images of shape {self.image_shape})"


def as_image_source(images) -> "torch.Tensor | ImageChunks":
    """What :func:`~mcvae_framework.graph.invariant_graph.invariant_graph_clusters` reads: a tensor
    as float32 on the CPU, an :class:`ImageChunks` as it is."""
    if isinstance(images, ImageChunks):
        return images
    return torch.as_tensor(images).detach().to("cpu", torch.float32)


def transformed(images, transform: Callable[[torch.Tensor], torch.Tensor], image_shape: tuple | None = None):
    """An image source with ``transform`` applied to its images: a tensor's transformed now,
    an :class:`ImageChunks`' wrapped in one that transforms each chunk as it is read (the set
    is never held whole).

    :param transform: a ``(k, C, H, W)`` batch of images to the transformed batch.
    :param image_shape: the shape ``transform`` gives one image (default: the shape it had).
    """
    if not isinstance(images, ImageChunks):
        return transform(images)
    return ImageChunks(lambda positions: transform(torch.as_tensor(images.read(positions)).float()), len(images),
                       images.image_shape if image_shape is None else image_shape, progress=images.progress)


__all__ = ["ImageChunks", "as_image_source", "transformed"]
