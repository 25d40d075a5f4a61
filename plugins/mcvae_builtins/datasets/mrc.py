"""``mrc``: a cryo-EM particle stack (``.mrcs``, or ``.mrc`` marked as an image stack), or a
stack of volumes (subtomograms: a 4-D ``N x D x H x W`` volume stack, as mrcfile writes a
4-D array), read with ``mrcfile`` and memory-mapped, so a stack larger than memory streams
from disk.

Each particle is preprocessed as cryo-EM packages do (see
:mod:`mcvae_builtins.datasets.preprocess`): optionally inverted, Fourier-cropped to
``downsample`` pixels, then normalised per particle (by default zero mean and unit
variance inside a centred circle, mapped onto ``[0, 1]``). Labels, when known (a class
per particle from an earlier classification, say), come from a separate ``.npy`` or text
file with one integer per particle; they are used only to score the clusters.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import ClassVar, Literal, Optional

import numpy as np
from pydantic import Field, field_validator

from mcvae_framework.errors import DataError
from mcvae_framework.interfaces import (ALL, ParticleStack, SeededSplitConfig, SourceReader, build_split, check_split,
                                        resolve_path, seeded_split)

from .arrays import check_labels, value_scale
from .preprocess import Preprocess, PreprocessFields

#: MRC modes of real-valued images: int8, int16, float32, uint16, float16.
REAL_MODES = {0: "int8", 1: "int16", 2: "float32", 6: "uint16", 12: "float16"}
#: values are checked on this many particles when ``normalize: none``.
RANGE_SAMPLE = 256


class MRCConfig(PreprocessFields, SeededSplitConfig):
    """A cryo-EM particle stack (MRC/MRCS file) read with mrcfile, memory-mapped;
    per-particle normalisation and optional Fourier-crop downsampling."""

    type: Literal["mrc"] = "mrc"
    path: str = Field(..., description=".mrcs particle stack (or .mrc marked as an image stack); a relative path "
                      "is read from the config file's folder")
    labels: Optional[str] = Field(
        None, description="optional .npy or text file of one integer class per particle (only to score clusters)"
    )
    pixel_size: Optional[float] = Field(
        None, gt=0, description="Angstrom per pixel of the stack's particles; default: the header's voxel size "
        "(STAR files and class averages written from this data carry it)"
    )

    #: ``mcvae predict RUN --data FILE.mrcs`` reads such files with this plugin.
    reads_paths: ClassVar[tuple[str, ...]] = (".mrc", ".mrcs")

    _resolve_paths = field_validator("path", "labels")(resolve_path)

    def data_kind(self) -> str | None:
        try:
            with mrcfile_module().mmap(self.path, mode="r", permissive=True) as handle:
                return "volume" if handle.data is not None and handle.data.ndim == 4 else "image"
        except (OSError, ValueError):
            return None  # unreadable: building the dataset says why

    def missing_resources(self) -> list[tuple[str, str]]:
        out = []
        for name in ("path", "labels"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_file():
                out.append((name, f"no file at {value} (resolved: {Path(value).resolve()}); set `{name}:` to "
                                  "an existing file (a relative path is read from the config file's folder)"))
        return out


def mrcfile_module():
    """``mrcfile``, imported when a file is read (not when the plugin loads)."""
    import mrcfile

    return mrcfile


class _MRCStack:
    """An open, memory-mapped stack: indexing reads particles (``(k, H, W)``) or volumes
    (``(k, D, H, W)``)."""

    def __init__(self, path: str):
        self.handle = mrcfile_module().mmap(path, mode="r", permissive=False)
        data = self.handle.data
        self.data = data[None] if data.ndim == 2 else data

    def __getitem__(self, positions):
        return self.data[positions]


def open_stack(path: Path) -> _MRCStack:
    """The stack at ``path``, after checking it is one: real-valued, square, not empty, a stack.

    :raises DataError: naming the file, what is wrong and how to fix it.
    """
    where = f"mrc {path}"
    if not path.is_file():
        raise DataError(f"{where}: no such file (resolved: {path.resolve()}); set `path:` to a .mrcs particle stack")
    try:
        stack = _MRCStack(str(path))
    except (ValueError, OSError) as exc:
        raise DataError(f"{where}: not a readable MRC file (mrcfile: {exc}); check that the file is complete, or "
                        "write it with mrcfile.new(path).set_data(particles)") from None
    mode = int(stack.handle.header.mode)
    if mode not in REAL_MODES:
        kind = "complex values (a Fourier transform)" if mode in (3, 4) else "values of an unsupported type"
        raise DataError(f"{where}: field `mode` of the header is {mode}: the file holds {kind}; particle images must "
                        f"be real-valued (MRC modes {', '.join(f'{m} ({t})' for m, t in REAL_MODES.items())}); "
                        "write the real-space particles instead")
    shape = stack.data.shape
    if stack.data.ndim not in (3, 4):
        raise DataError(f"{where}: the data has shape {shape}; a particle stack is N x H x W and a volume stack "
                        "N x D x H x W; write the particles (or subtomograms) as one such stack")
    if shape[0] == 0:
        raise DataError(f"{where}: the stack is empty (header nz = 0): there are no particles to train on; "
                        "check that the particles were written")
    if stack.data.ndim == 4 and not (shape[1] == shape[2] == shape[3]):
        raise DataError(f"{where}: the volumes are {shape[3]} x {shape[2]} x {shape[1]} voxels, not cubes; "
                        "extract the subtomograms in cubic boxes (or pad them to cubes)")
    if shape[-1] != shape[-2]:
        raise DataError(f"{where}: the particles are {shape[2]} x {shape[1]} pixels (header nx x ny), not square; "
                        "extract them in square boxes (or pad them to a square)")
    if path.suffix.lower() == ".mrc" and stack.data.ndim == 3 and stack.handle.is_volume():
        raise DataError(f"{where}: the header marks it as a 3-D volume (field `ispg` = {int(stack.handle.header.ispg)}),"
                        " not a particle stack; rename it to .mrcs, or mark it as a stack: "
                        "`with mrcfile.open(path, 'r+') as m: m.set_image_stack()`")
    return stack


def read_labels(path: Path, n: int, where: str) -> tuple[np.ndarray, list[str]]:
    """Labels from a ``.npy`` or a text file, renumbered ``0..K-1``, and the class names."""
    if not path.is_file():
        raise DataError(f"{where}: no labels file at {path} (resolved: {path.resolve()}); set `labels:` to a .npy or "
                        "text file with one integer per particle, or leave it out")
    try:
        raw = np.load(path, allow_pickle=False) if path.suffix.lower() == ".npy" else np.loadtxt(path, ndmin=1)
    except (OSError, ValueError) as exc:
        raise DataError(f"{where}: cannot read the labels file {path} ({exc}); write one integer per particle with "
                        "numpy.save or one per line in a text file") from None
    return check_labels(raw, n, path, where=f"{where} (labels file {path})")


def make_mrc(config: MRCConfig, *, split: str = "train"):
    check_split(split, "mrc")
    path = Path(config.path).expanduser()
    where = f"mrc {path}"
    stack = open_stack(path)
    n, side = stack.data.shape[0], stack.data.shape[-1]
    config.check_downsample(side, where, items="particles")
    scale = 1.0
    if config.normalize == "none":
        fix = "; or set `normalize: standardize` (the default) or `minmax`"
        scale = value_scale(np.asarray(stack.data[:RANGE_SAMPLE]), where, fix)
    labels, names = (read_labels(Path(config.labels), n, where) if config.labels else (None, None))
    parts = seeded_split(n, labels, config.test_fraction, config.split_seed, where, allow_empty=split == ALL)
    spatial = stack.data.ndim - 1
    prepare = Preprocess.from_config(config, scale, spatial)
    reader = SourceReader((1,) + (prepare.output_side(side),) * spatial, prepare,
                          open_source=partial(_MRCStack, str(path)))
    dataset = build_split(
        config, split, parts, reader, labels, n_classes=len(names) if names else None,
        sizes={k: len(v) for k, v in parts.items()}, class_names=names, description=f"mrc ({path})",
    )
    header_size = float(stack.handle.voxel_size.x)
    dataset.particle_stack = ParticleStack(str(path.resolve()), side, config.pixel_size or header_size or None)
    return dataset
