"""``star``: a user's own RELION particle STAR file (3.1+: ``data_optics`` and
``data_particles``; or an older single table), its particles read from the ``.mrcs``
stacks its ``rlnImageName`` column names (``12@Extract/job007/mic1.mrcs``), memory-mapped.

Every column of the file (CTF, coordinates, micrograph names, ...) and its optics table
are carried through: a STAR file written from this data (``mcvae predict --out
FILE.star``) keeps them, with the framework's class, angle, shift and probability columns
set. The pixel size is the optics group's ``rlnImagePixelSize`` (or ``pixel_size``).
Preprocessing is the ``mrc`` data's (normalisation, Fourier-crop ``downsample``).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import ClassVar, Literal, Optional

import numpy as np
from pydantic import Field, field_validator

from mcvae_framework.errors import DataError
from mcvae_framework.interfaces import (ParticleStack, SeededSplitConfig, SourceReader, build_split, check_split,
                                        resolve_path, seeded_split)

from .arrays import check_labels, value_scale
from .mrc import open_stack
from .preprocess import Preprocess, PreprocessFields


class StarConfig(PreprocessFields, SeededSplitConfig):
    """A RELION particle STAR file; the particles are read from the stacks it names."""

    type: Literal["star"] = "star"
    path: str = Field(..., description="the particle .star file; a relative path is read from the config file's folder")
    project_dir: Optional[str] = Field(
        None, description="the folder the file's rlnImageName paths are relative to (RELION's project folder); "
        "default: the STAR file's folder, then its parent folders"
    )
    labels_column: Optional[str] = Field(
        None, description="a column of integer classes (e.g. rlnClassNumber of an earlier classification), "
        "only to score the clusters"
    )
    pixel_size: Optional[float] = Field(
        None, gt=0, description="Angstrom per pixel; default: the optics group's rlnImagePixelSize"
    )

    #: ``mcvae predict RUN --data FILE.star`` reads such files with this plugin.
    reads_paths: ClassVar[tuple[str, ...]] = (".star",)

    _resolve_paths = field_validator("path", "project_dir")(resolve_path)

    def missing_resources(self) -> list[tuple[str, str]]:
        if not Path(self.path).is_file():
            return [("path", f"no file at {self.path} (resolved: {Path(self.path).resolve()}); set `path:` to a "
                             "RELION particle .star file")]
        return []


def read_particle_star(path: Path) -> tuple[dict, dict | None]:
    """The particle columns and the optics columns (``None`` without an optics table) of a
    STAR file, each ``{column: numpy array}``."""
    try:
        import starfile  # optional dependency (the `cryoem` extra)
    except ImportError:
        raise DataError(f"star {path}: reading STAR files needs the starfile library: `pip install starfile` "
                        '(or `pip install -e ".[cryoem]"`)') from None
    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as exc:  # starfile raises parser errors of several kinds
        raise DataError(f"star {path}: not a readable STAR file ({exc})") from None
    particles = blocks.get("particles")
    if particles is None:
        tables = [b for b in blocks.values() if hasattr(b, "columns") and "rlnImageName" in b.columns]
        particles = tables[0] if tables else None
    if particles is None or "rlnImageName" not in particles.columns or len(particles) == 0:
        raise DataError(f"star {path}: no particle table with an rlnImageName column (blocks: "
                        f"{', '.join(blocks) or 'none'}); give a RELION particle STAR file (data_particles)")
    optics = blocks.get("optics")
    return ({c: particles[c].to_numpy() for c in particles.columns},
            {c: optics[c].to_numpy() for c in optics.columns} if optics is not None else None)


def split_image_names(names, star: Path, project_dir: str | None) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """``12@stack.mrcs`` names -> the stack files, each particle's stack and its section (from 0)."""
    stacks: dict[str, int] = {}
    which = np.empty(len(names), dtype=np.int64)
    sections = np.empty(len(names), dtype=np.int64)
    for i, name in enumerate(names):
        number, at, file = str(name).partition("@")
        if not at or not number.isdigit() or int(number) < 1:
            raise DataError(f"star {star}: rlnImageName {name!r} (row {i + 1}) is not of the form N@stack.mrcs")
        which[i] = stacks.setdefault(file, len(stacks))
        sections[i] = int(number) - 1
    bases = [Path(project_dir)] if project_dir else [star.parent, *star.parent.parents][:4]
    files = []
    for file in stacks:
        candidates = [Path(file)] if Path(file).is_absolute() else [base / file for base in bases]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise DataError(f"star {star}: the stack {file} named in rlnImageName is not at "
                            f"{', '.join(map(str, candidates))}; set `project_dir:` to the folder its paths are "
                            "relative to (RELION's project folder)")
        files.append(found)
    return files, which, sections


class _Stacks:
    """Several memory-mapped stacks read as one source: position ``i`` is section
    ``sections[i]`` of stack ``which[i]``."""

    def __init__(self, files, which, sections):
        self.stacks = [open_stack(Path(f)) for f in files]
        self.which, self.sections = which, sections

    def __getitem__(self, positions):
        positions = np.atleast_1d(np.asarray(positions, dtype=np.int64))
        first = self.stacks[0].data
        rows = np.empty((len(positions), *first.shape[1:]), dtype=first.dtype)
        for s, stack in enumerate(self.stacks):
            mine = np.flatnonzero(self.which[positions] == s)
            if mine.size:
                rows[mine] = stack.data[self.sections[positions[mine]]]
        return rows


def make_star(config: StarConfig, *, split: str = "train"):
    check_split(split, "star")
    path = Path(config.path).expanduser()
    where = f"star {path}"
    columns, optics = read_particle_star(path)
    files, which, sections = split_image_names(columns["rlnImageName"], path, config.project_dir)
    stacks = [open_stack(f) for f in files]
    sides = {int(s.data.shape[-1]) for s in stacks}
    if len(sides) != 1:
        raise DataError(f"{where}: its stacks hold particles of different sizes ({sorted(sides)} px); extract them "
                        "in one box size")
    side = sides.pop()
    for f, s in zip(files, stacks):
        if sections[which == files.index(f)].max() >= s.data.shape[0]:
            raise DataError(f"{where}: rlnImageName asks for section {int(sections[which == files.index(f)].max()) + 1}"
                            f" of {f}, which holds {s.data.shape[0]}; the STAR file does not match its stacks")
    config.check_downsample(side, where, items="particles")
    labels, names = None, None
    if config.labels_column:
        if config.labels_column not in columns:
            raise DataError(f"{where}: no column {config.labels_column!r} for `labels_column`; the file has "
                            f"{', '.join(columns)}")
        labels, names = check_labels(columns[config.labels_column], len(which), path, where=where)
    n = len(which)
    parts = seeded_split(n, labels, config.test_fraction, config.split_seed, where, allow_empty=split == "all")
    scale = 1.0
    if config.normalize == "none":
        scale = value_scale(np.asarray(stacks[0].data[:256]), where, "; or set `normalize: standardize` (the default)")
    prepare = Preprocess.from_config(config, scale)
    out = prepare.output_side(side)
    reader = SourceReader((1, out, out), prepare,
                          open_source=partial(_Stacks, [str(f) for f in files], which, sections))
    dataset = build_split(config, split, parts, reader, labels, n_classes=len(names) if names else None,
                          sizes={k: len(v) for k, v in parts.items()}, class_names=names, description=f"star ({path})")
    pixel = config.pixel_size
    if pixel is None and optics is not None and "rlnImagePixelSize" in optics:
        pixel = float(optics["rlnImagePixelSize"][0])
    dataset.particle_stack = ParticleStack(str(path.resolve()), side, pixel or float(stacks[0].handle.voxel_size.x)
                                           or None, columns=columns, optics=optics)
    return dataset
