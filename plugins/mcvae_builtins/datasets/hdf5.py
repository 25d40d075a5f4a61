"""``hdf5``: images from a named dataset of an HDF5 file (microscopy or astronomy
cut-outs, particle stacks), read with ``h5py``; labels optionally from another dataset of
the same file.

Images are ``N x H x W`` or ``N x C x H x W`` (``C`` 1 or 3), square. Only the images a
split keeps are read, and a streamed split (``storage: stream``) reads each batch from
the file as training asks for it, so the file may be larger than memory. Each process
(a ``DataLoader`` worker, a DDP process) opens the file itself: h5py handles must not
cross a ``fork``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import ClassVar, Literal, Optional

import numpy as np
from pydantic import Field, field_validator

from mcvae_framework.errors import DataError
from mcvae_framework.interfaces import (ALL, SeededSplitConfig, SourceReader, build_split, check_split, resolve_path,
                                        seeded_split)

from .arrays import check_labels, value_scale
from .preprocess import Normalize, Preprocess, PreprocessFields

#: values are checked on this many images when ``normalize: none``.
RANGE_SAMPLE = 1024


class HDF5Config(PreprocessFields, SeededSplitConfig):
    """Images (and optional labels) from named datasets of an HDF5 file, read with h5py."""

    type: Literal["hdf5"] = "hdf5"
    path: str = Field(..., description="the .h5 / .hdf5 file; a relative path is read from the config file's folder")
    images: str = Field("images", description="name of the dataset of images inside the file (e.g. `images` or "
                        "`/entry/data`): N x H x W or N x C x H x W")
    labels: Optional[str] = Field(None, description="name of a dataset of N integer labels in the same file "
                                  "(only to score clusters)")
    normalize: Normalize = Field(
        "none", description="per image: none (uint8 0..255, or values already in [0, 1]); minmax (lowest value 0, "
        "highest 1); standardize (zero mean, unit variance inside a centred circle, then [-clip_sigma, clip_sigma] "
        "mapped onto [0, 1])"
    )

    #: ``mcvae predict RUN --data FILE.h5`` reads such files with this plugin.
    reads_paths: ClassVar[tuple[str, ...]] = (".h5", ".hdf5")

    _resolve_path = field_validator("path")(resolve_path)

    def missing_resources(self) -> list[tuple[str, str]]:
        path = Path(self.path)
        if not path.is_file():
            return [("path", f"no file at {path} (resolved: {path.resolve()}); set `path:` to an HDF5 file "
                             "(a relative path is read from the config file's folder)")]
        return []


def _open_dataset(path: str, name: str):
    import h5py

    return h5py.File(path, "r")[name]


def _datasets_in(handle) -> list[str]:
    import h5py

    found = []
    handle.visititems(lambda name, obj: found.append(f"{name} {obj.shape}") if isinstance(obj, h5py.Dataset) else None)
    return found


def inspect_file(path: Path, images: str, labels: str | None):
    """The images dataset (open) and the labels (read), after checking both.

    :raises DataError: naming the file, the dataset (field) at fault and the fix.
    """
    import h5py

    where = f"hdf5 {path}"
    if not path.is_file():
        raise DataError(f"{where}: no such file (resolved: {path.resolve()}); set `path:` to an HDF5 file")
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{where}: not a readable HDF5 file (h5py: {exc}); check that the file is complete and was "
                        "written by h5py or another HDF5 library") from None

    def dataset(name: str, field: str):
        obj = handle.get(name)
        if not isinstance(obj, h5py.Dataset):
            what = "is a group, not a dataset" if obj is not None else "does not exist"
            listing = ", ".join(_datasets_in(handle)[:8]) or "none"
            raise DataError(f"{where}: `{field}: {name}` {what}; the file's datasets: {listing}. Set `{field}:` to "
                            "one of them")
        return obj

    data = dataset(images, "images")
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        raise DataError(f"{where}: dataset {images!r} holds {data.dtype} values, not numbers; store the pixels as "
                        "integers or floats")
    shape = data.shape
    if len(shape) not in (3, 4):
        raise DataError(f"{where}: dataset {images!r} has shape {shape}; expected N x H x W or N x C x H x W "
                        "(`images:` names the whole stack, not one image)")
    if len(shape) == 4 and shape[1] not in (1, 3) and shape[-1] in (1, 3):
        raise DataError(f"{where}: dataset {images!r} has shape {shape}, which looks channel-last; store it as "
                        "N x C x H x W, e.g. images.transpose(0, 3, 1, 2)")
    if shape[0] == 0:
        raise DataError(f"{where}: dataset {images!r} is empty (shape {shape}); there are no images to train on")
    if shape[-1] != shape[-2]:
        raise DataError(f"{where}: dataset {images!r} holds {shape[-1]} x {shape[-2]} images, not square; crop or pad "
                        "them to squares (the model's poses act on square images)")
    label_info = None
    if labels is not None:
        raw = dataset(labels, "labels")[()]
        label_info = check_labels(np.asarray(raw), shape[0], path, where=f"{where} (dataset {labels!r})")
    return data, label_info


def make_hdf5(config: HDF5Config, *, split: str = "train"):
    check_split(split, "hdf5")
    path = Path(config.path).expanduser()
    where = f"hdf5 {path}"
    data, label_info = inspect_file(path, config.images, config.labels)
    n, side = data.shape[0], data.shape[-1]
    channels = data.shape[1] if data.ndim == 4 else 1
    config.check_downsample(side, where)
    scale = 1.0
    if config.normalize == "none":
        fix = "; or set `normalize: minmax` or `standardize`"
        scale = value_scale(np.asarray(data[:RANGE_SAMPLE]), f"{where} (dataset {config.images!r})", fix)
    data.file.close()  # each process reopens the file (see the module doc)
    labels, names = label_info if label_info is not None else (None, None)
    parts = seeded_split(n, labels, config.test_fraction, config.split_seed, where, allow_empty=split == ALL)
    prepare = Preprocess.from_config(config, scale)
    out_side = prepare.output_side(side)
    reader = SourceReader((channels, out_side, out_side), prepare,
                          open_source=partial(_open_dataset, str(path), config.images))
    return build_split(
        config, split, parts, reader, labels, n_classes=len(names) if names else None,
        sizes={k: len(v) for k, v in parts.items()}, class_names=names, description=f"hdf5 ({path}:{config.images})",
    )
