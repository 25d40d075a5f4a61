"""Particles with their classes, in-plane angles and shifts as a RELION 3.1+ STAR file
(``mcvae predict RUN --data ... --out FILE.star``), written with the ``starfile`` library.

The file has two blocks, as RELION 3.1 and later (and cryoSPARC's import) read them:

* ``data_optics``: ``rlnOpticsGroup``, ``rlnOpticsGroupName``, ``rlnImagePixelSize``,
  ``rlnImageSize``, ``rlnImageDimensionality``;
* ``data_particles``: ``rlnImageName`` (``index@stack.mrcs``, counted from 1),
  ``rlnClassNumber`` (the cluster + 1: RELION counts classes from 1), ``rlnAnglePsi``,
  ``rlnOriginXAngst``, ``rlnOriginYAngst``, ``rlnMaxValueProbDistribution`` (the
  probability of the assigned cluster), ``rlnOpticsGroup``; the columns of the user's
  own particle STAR file, where the images came from one, are carried through.

**RELION's convention** (its ``Conventions`` page and ``ObservationModel::
predictObservation``): pixel ``(x, y)`` is (column, row) from the upper-left corner, the
centre of a box of side ``N`` is pixel ``(N // 2, N // 2)``; the angles rotate the
reference into the particle and the origin shifts the particle onto the reference:
``particle(q) = reference(A(psi)^T (q + origin - c) + c)`` with
``A(psi) = [[cos psi, sin psi], [-sin psi, cos psi]]`` (``Euler_angles2matrix(0, 0, psi)``).

The model says ``x = g . x0``: the canonical image ``x0`` (the reference) moved by
``g = exp(tau)``, content at ``p`` going to ``R p + t`` in normalised coordinates
(:mod:`mcvae_framework.interfaces.group`: ``y`` points down, as RELION's rows do). So
``A(psi) = R`` and ``psi = -theta`` (``theta`` the rotation angle of ``R``, in degrees), and
``origin = -(t N / 2 + (I - R)(c_model - c))``, where the second term moves the rotation
centre from the model's (the middle of the box, pixel ``(N - 1) / 2``) to RELION's
(pixel ``N // 2``): half a pixel on even boxes. Shifts are in pixels of the particle
stack (the model may have read a Fourier-cropped copy) times the pixel size. A group
that also scales (``scale_rotation``-like) has no RELION column for it: its rotation
(polar part) and translation are written, the scale is not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError


def relion_pose(matrices: np.ndarray, model_side: int, stack_side: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """RELION's ``rlnAnglePsi`` (degrees, in ``(-180, 180]``) and origin (pixels of the
    stack, ``(N, 2)``: x, y) of poses given as homogeneous ``(N, 3, 3)`` matrices (see the
    module docstring).

    :param model_side: the side of the images the model read.
    :param stack_side: the side of the particles in the stack the STAR file points to
        (default: ``model_side``).
    """
    g = np.asarray(matrices, dtype=np.float64)
    if g.ndim != 3 or g.shape[1:] != (3, 3):
        raise DataError(f"a STAR file needs planar poses (3 x 3 homogeneous matrices), got shape {g.shape}")
    stack_side = int(stack_side or model_side)
    theta = np.arctan2(g[:, 1, 0] - g[:, 0, 1], g[:, 0, 0] + g[:, 1, 1])  # the rotation of A's polar part
    cos, sin = np.cos(theta), np.sin(theta)
    rotation = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    scale = stack_side / model_side
    centre_offset = ((model_side - 1) / 2 - model_side // 2) * scale  # model's centre minus RELION's, stack px
    offset = np.full(2, centre_offset)
    shift = g[:, :2, 2] * stack_side / 2 + offset - rotation @ offset
    psi = -np.degrees(theta)
    psi = np.where(psi <= -180.0, psi + 360.0, psi)
    return psi, -shift


def keep_clusters(result: dict, clusters) -> dict:
    """The rows of a prediction ``result`` whose cluster is in ``clusters`` (per-image
    arrays filtered, the rest kept)."""
    wanted = np.asarray(sorted(set(int(c) for c in clusters)), dtype=np.int64)
    k = result["probabilities"].shape[1]
    unknown = [int(c) for c in wanted if not 0 <= c < k]
    if unknown:
        raise ConfigError([("--clusters", f"no cluster {', '.join(map(str, unknown))}: the model has clusters "
                            f"0..{k - 1} (the numbers of report.html and of the prediction files)")])
    mask = np.isin(result["cluster"], wanted)
    if not mask.any():
        raise DataError(f"--clusters {','.join(map(str, wanted))}: no image of the data is in these clusters "
                        f"(the images fall in clusters {sorted(set(result['cluster'].tolist()))}); pick others")
    n = len(result["cluster"])
    return {key: value[mask] if isinstance(value, np.ndarray) and value.ndim and len(value) == n else value
            for key, value in result.items()}


def parse_clusters(text: str | None) -> list[int] | None:
    """``"1,3,4"`` -> ``[1, 3, 4]``; ``None`` or ``""`` -> ``None`` (every cluster)."""
    if not text:
        return None
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise ConfigError([("--clusters", f"{text!r} is not a comma-separated list of cluster numbers, "
                            "e.g. --clusters 1,3,4")]) from None


def _star_path(path: Path) -> str:
    """A stack path as RELION reads it: relative to the current folder (RELION's project
    folder) when the stack lies under it, else absolute."""
    path = Path(path).resolve()
    try:
        return path.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def particle_tables(result: dict, *, stack: str, pixel_size: float, model_side: int, stack_side: int,
                    positions=None, columns: dict | None = None, optics: dict | None = None) -> dict:
    """The ``optics`` and ``particles`` tables (pandas) of a STAR file.

    :param result: predictions (:func:`mcvae_framework.report.prediction.predictions`):
        ``cluster``, ``probabilities`` and, with a group, ``pose_matrix``.
    :param stack: the ``.mrcs`` stack the particles are read from.
    :param positions: each particle's position in the stack, from 0 (default ``result["index"]``).
    :param columns: further per-particle columns carried through (a user's STAR columns;
        their ``rlnImageName`` and ``rlnOpticsGroup`` are kept).
    :param optics: the optics table to write (a user's), instead of the minimal one.
    """
    import pandas as pd  # starfile's own dependency

    n = len(result["cluster"])
    positions = np.asarray(result["index"] if positions is None else positions, dtype=np.int64)
    if "pose_matrix" in result:
        psi, origin = relion_pose(result["pose_matrix"], model_side, stack_side)
    else:
        psi, origin = np.zeros(n), np.zeros((n, 2))
    chosen = result["probabilities"][np.arange(n), result["cluster"]]
    particles = {name: np.asarray(values) for name, values in (columns or {}).items()}
    ours = {
        "rlnImageName": [f"{int(i) + 1:06d}@{stack}" for i in positions],
        "rlnClassNumber": result["cluster"].astype(np.int64) + 1,
        "rlnAnglePsi": np.round(psi, 6),
        "rlnOriginXAngst": np.round(origin[:, 0] * pixel_size, 6),
        "rlnOriginYAngst": np.round(origin[:, 1] * pixel_size, 6),
        "rlnMaxValueProbDistribution": np.round(chosen.astype(np.float64), 6),
        "rlnOpticsGroup": np.ones(n, dtype=np.int64),
    }
    particles.update({key: value for key, value in ours.items()
                      if key not in particles or key not in ("rlnImageName", "rlnOpticsGroup")})
    if optics is None:
        optics = {"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"],
                  "rlnImagePixelSize": [float(pixel_size)], "rlnImageSize": [int(stack_side)],
                  "rlnImageDimensionality": [2]}
    return {"optics": pd.DataFrame(optics), "particles": pd.DataFrame(particles)}


def write_star(tables: dict, out) -> Path:
    """Write the tables with ``starfile`` (``data_optics``, then ``data_particles``)."""
    starfile = require_starfile()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    starfile.write(tables, out, overwrite=True)
    return out


def require_starfile():
    """The ``starfile`` module, or one message saying how to install it."""
    try:
        import starfile  # optional dependency (the `cryoem` extra)
    except ImportError:
        raise DataError("writing .star files needs the starfile library: `pip install starfile` "
                        '(or `pip install -e ".[cryoem]"`), or write .csv / .npz instead') from None
    return starfile


def write_particles_star(result: dict, out, *, dataset, images=None, pixel_size: float | None = None,
                         model_side: int) -> Path:
    """``out`` (a ``.star`` file) for the predicted particles of ``dataset``.

    A dataset read from a particle stack (its ``particle_stack``, e.g. the ``mrc`` data)
    is pointed to as it is, shifts in its own pixels and its header's pixel size; other
    images (a folder, an array file) are first written as the stack ``<out>.mrcs`` beside
    the STAR file (``images``: the ``(N, C, H, W)`` images the model read), at
    ``pixel_size`` (default 1 Angstrom).
    """
    require_starfile()
    out = Path(out)
    stack_info = getattr(dataset, "particle_stack", None)
    if stack_info is not None:
        stack, stack_side = _star_path(Path(stack_info.path)), int(stack_info.side)
        size = pixel_size or stack_info.pixel_size
        if not size:
            raise ConfigError([("--pixel-size", f"{stack_info.path} has no pixel size in its header (0); give it "
                                "with --pixel-size (Angstrom per pixel) or the data section's `pixel_size`")])
        columns = stack_info.columns_for(result["index"])
        return write_star(particle_tables(result, stack=stack, pixel_size=size, model_side=model_side,
                                          stack_side=stack_side, columns=columns,
                                          optics=getattr(stack_info, "optics", None)), out)
    if images is None:
        raise DataError(f"{out}: the images are not from a particle stack, and none were given to write one")
    from .class_averages import write_mrcs

    stack_file = out.with_suffix(".mrcs")
    write_mrcs(np.asarray(images, dtype=np.float32), stack_file, pixel_size or 1.0)
    tables = particle_tables(result, stack=_star_path(stack_file), pixel_size=pixel_size or 1.0,
                             model_side=model_side, stack_side=model_side, positions=np.arange(len(result["cluster"])))
    return write_star(tables, out)


__all__ = ["keep_clusters", "parse_clusters", "particle_tables", "relion_pose", "write_particles_star", "write_star"]
