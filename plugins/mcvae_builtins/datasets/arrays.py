"""``arrays``: images from a ``.npy`` file, or a ``.npz`` file with ``images`` and
optional ``labels``; split by a seed.

A ``.npy`` file is memory-mapped: only the images a split keeps are read, and a streamed
split (``storage: stream``) reads each batch from the file as training asks for it, so
the file may be larger than memory. A ``.npz`` archive is compressed and cannot be
mapped: it is read whole.

Images are ``N x H x W`` (one channel) or ``N x C x H x W`` with ``H == W``; volumes (for a
group that moves volumes, such as ``so3``) are ``N x D x H x W`` (one channel) or
``N x C x D x H x W`` cubes (``kind`` says which; by default a 5-D array, or a 4-D one whose
last three axes are equal and longer than 4, holds volumes). Values are ``uint8``
(0..255), other integers within 0..255, or floats within ``[0, 1]``. Labels are ``N``
integers; values that are not ``0..K-1`` are renumbered in sorted order (the original
values become the class names).
"""

from __future__ import annotations

import zipfile
from functools import partial
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from mcvae_framework.errors import DataError
from mcvae_framework.interfaces import (ALL, ScaleToUnit, SeededSplitConfig, SourceReader, build_split, check_split,
                                        resolve_path, seeded_split, wants_streaming)


#: a streamed file's value range is checked on this many images (all are read only in memory).
RANGE_SAMPLE = 1024


class ArraysConfig(SeededSplitConfig):
    """Images (and labels) from a NumPy ``.npy`` / ``.npz`` file."""

    type: Literal["arrays"] = "arrays"
    path: str = Field(..., description=".npy file of images, or .npz with keys `images` and optional `labels`; "
                      "a relative path is read from the config file's folder")

    #: ``mcvae predict RUN --data FILE.npy`` reads such files with this plugin.
    reads_paths: ClassVar[tuple[str, ...]] = (".npy", ".npz")

    kind: Literal["auto", "images", "volumes"] = Field(
        "auto", description="images: N x H x W or N x C x H x W; volumes: N x D x H x W or N x C x D x H x W cubes; "
        "auto: volumes for a 5-D array or a 4-D one whose last three axes are equal and longer than 4, else images",
    )

    _resolve_path = field_validator("path")(resolve_path)

    def missing_resources(self) -> list[tuple[str, str]]:
        path = Path(self.path)
        if not path.is_file():
            return [("path", f"no file at {path} (resolved: {path.resolve()}); set `path:` to a .npy or .npz "
                             "file (a relative path is read from the config file's folder)")]
        return []

    def data_kind(self) -> str | None:
        if self.kind != "auto":
            return self.kind[:-1]
        try:
            return "volume" if holds_volumes(array_shape(Path(self.path)), self.kind) else "image"
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            return None  # unreadable: building the dataset says why


def array_shape(path: Path) -> tuple[int, ...]:
    """The shape of the images array of a ``.npy`` or ``.npz`` file, from its header alone."""
    if path.suffix.lower() == ".npy":
        return tuple(np.load(path, mmap_mode="r", allow_pickle=False).shape)
    with zipfile.ZipFile(path) as archive, archive.open("images.npy") as member:
        version = np.lib.format.read_magic(member)
        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        return tuple(header(member)[0])


def holds_volumes(shape: tuple[int, ...], kind: str) -> bool:
    """Whether an array of ``shape`` holds volumes (see the ``kind`` field)."""
    if kind != "auto":
        return kind == "volumes"
    return len(shape) == 5 or (len(shape) == 4 and shape[1] == shape[2] == shape[3] and shape[1] > 4)


def read_arrays(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The raw ``images`` and ``labels`` (or ``None``) arrays of ``path``.

    :raises DataError: missing file, wrong suffix, unreadable file or missing key.
    """
    if not path.is_file():
        raise DataError(f"arrays: no file at {path} (resolved: {path.resolve()}); set `path:` to a .npy or .npz file")
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise DataError(f"arrays: {path} is neither .npy nor .npz; save the images with numpy.save or numpy.savez")
    try:
        if suffix == ".npy":
            return np.load(path, mmap_mode="r", allow_pickle=False), None
        with np.load(path, allow_pickle=False) as archive:
            if "images" not in archive.files:
                keys = ", ".join(archive.files) or "none"
                raise DataError(f"arrays: {path} has no `images` array (its keys: {keys}); "
                                "save it as numpy.savez(path, images=..., labels=...)")
            labels = archive["labels"] if "labels" in archive.files else None
            return archive["images"], labels
    except DataError:
        raise
    except (OSError, ValueError) as exc:
        raise DataError(f"arrays: cannot read {path} ({exc}); it must be a file written by numpy.save / numpy.savez "
                        "without pickled objects") from None


def check_images(images: np.ndarray, path: Path, sample: int | None = None, kind: str = "auto"
                 ) -> tuple[np.ndarray, float]:
    """``(N, C, H, H)`` images (``(N, C, D, D, D)`` volumes) and the value that maps to 1.0.

    :param sample: check the value range of only the first ``sample`` images (a streamed
        file is not read whole here; images read later are clamped to ``[0, 1]``).
    :param kind: ``images``, ``volumes`` or ``auto`` (see :func:`holds_volumes`).
    :raises DataError: wrong rank, non-square, unsupported dtype or values out of range.
    """
    if holds_volumes(images.shape, kind):
        images = images[:, None] if images.ndim == 4 else images
        if images.ndim != 5:
            raise DataError(f"arrays {path}: volumes have shape {images.shape} (rank {images.ndim}); expected "
                            "N x D x H x W or N x C x D x H x W")
        if not (images.shape[2] == images.shape[3] == images.shape[4]) or images.shape[0] == 0:
            raise DataError(f"arrays {path}: volumes have shape {images.shape}; they must be cubes (D == H == W) and "
                            "non-empty: crop or pad them to cubes, and save at least one volume")
        return images, value_scale(images[:sample] if sample else images, f"arrays {path}")
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise DataError(f"arrays {path}: images have shape {images.shape} (rank {images.ndim}); expected "
                        "N x H x W or N x C x H x W (or volumes: set kind: volumes)")
    n, c, h, w = images.shape
    if c not in (1, 3) and images.shape[-1] in (1, 3):
        raise DataError(f"arrays {path}: images have shape {images.shape}, which looks channel-last; transpose "
                        "them to N x C x H x W, e.g. images.transpose(0, 3, 1, 2)")
    if h != w or n == 0:
        raise DataError(f"arrays {path}: images have shape {images.shape}; they must be square (H == W) and non-empty: "
                        "crop or pad them to squares, and save at least one image")
    return images, value_scale(images[:sample] if sample else images, f"arrays {path}")


def value_scale(images: np.ndarray, where: str, fix: str = "") -> float:
    """The value that maps to 1.0 for ``images`` (255 for integers, 1 for floats).

    :param fix: what else the user may do, appended to the message.
    :raises DataError: an unsupported dtype, or values out of range.
    """
    if images.dtype == np.uint8:
        return 255.0
    if np.issubdtype(images.dtype, np.integer) or images.dtype == np.bool_:
        lo, hi = int(images.min()), int(images.max())
        if lo < 0 or hi > 255:
            raise DataError(f"{where}: integer images must lie in 0..255, found {lo}..{hi}{fix}")
        return 255.0
    if np.issubdtype(images.dtype, np.floating):
        lo, hi = float(images.min()), float(images.max())
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            hint = " (divide by 255?)" if np.isfinite(hi) and hi > 1.0 else ""
            raise DataError(f"{where}: float images must lie in [0, 1], found {lo}..{hi}{hint}{fix}")
        return 1.0
    raise DataError(f"{where}: images have dtype {images.dtype}; use uint8 or float{fix}")


def check_labels(labels: np.ndarray, n_images: int, path: Path, where: str | None = None
                 ) -> tuple[np.ndarray, list[str]]:
    """Labels as ``0..K-1`` int64 and the class names (the original values).

    :param where: how messages name the source (default ``arrays PATH``).
    :raises DataError: wrong length or rank, or values that are not integers.
    """
    where = where or f"arrays {path}"
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != n_images:
        raise DataError(f"{where}: labels have shape {labels.shape} but there are {n_images} images; "
                        f"expected one label per image, shape ({n_images},)")
    if not (np.issubdtype(labels.dtype, np.integer) or
            (np.issubdtype(labels.dtype, np.floating) and np.all(np.mod(labels, 1) == 0))):
        raise DataError(f"{where}: labels must be integers, got dtype {labels.dtype}")
    values, codes = np.unique(labels.astype(np.int64), return_inverse=True)
    return codes.astype(np.int64), [str(v) for v in values]


def _open_npy(path: str) -> np.ndarray:
    return np.load(path, mmap_mode="r", allow_pickle=False)


def make_arrays(config: ArraysConfig, *, split: str = "train"):
    check_split(split, "arrays")
    path = Path(config.path).expanduser()
    raw_images, raw_labels = read_arrays(path)
    # A file that will be streamed is not read whole just to check its values.
    stream = False
    volumes = holds_volumes(raw_images.shape, config.kind)
    with_channels = 5 if volumes else 4  # the rank of an array that has a channel axis
    if raw_images.ndim in (with_channels - 1, with_channels):
        shape = raw_images.shape[1:] if raw_images.ndim == with_channels else (1, *raw_images.shape[1:])
        wanted = len(raw_images) if config.limit is None else min(len(raw_images), config.limit * (1 + (split == ALL)))
        stream = wants_streaming(config.storage, wanted, tuple(shape), config.transform)
    images, scale = check_images(raw_images, path, sample=RANGE_SAMPLE if stream else None, kind=config.kind)
    spatial = images.ndim - 2
    labels, names = check_labels(raw_labels, len(images), path) if raw_labels is not None else (None, None)
    parts = seeded_split(len(images), labels, config.test_fraction, config.split_seed, f"arrays {path}",
                         allow_empty=split == ALL)
    if isinstance(raw_images, np.memmap):  # each process maps the file itself
        reader = SourceReader(images.shape[1:], ScaleToUnit(scale, spatial), open_source=partial(_open_npy, str(path)))
    else:
        reader = SourceReader(images.shape[1:], ScaleToUnit(scale, spatial), source=images)
    return build_split(
        config, split, parts, reader, labels, stream=stream,
        n_classes=len(names) if names else None, sizes={k: len(v) for k, v in parts.items()}, class_names=names,
        description=f"arrays ({path})",
    )
