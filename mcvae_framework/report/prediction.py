"""``mcvae predict``: cluster, cluster probabilities and pose of new images, to a file.

Rows follow the input's own order: a folder's sorted listing (class sub-folders in
sorted order, then their files), an array file's order, a dataset's source order. Every
image is predicted unless a split is asked for. The output format follows the file's
extension:

* ``.csv`` / ``.parquet`` -- one row per image: ``name`` (the file's path relative to the
  folder, for data with file names), ``index`` (the image's position in its source: the
  array index), ``split`` (only with ``split_column``: the split the image belongs to in
  training), ``label`` (when the data has labels), ``cluster``, ``probability_0..K-1``,
  ``tau_0..dim-1`` (the pose posterior mean in the group's Lie-algebra coordinates: see
  the group's documentation; for the built-in 2-D groups ``tau_0`` is the angle in
  radians, then the log-scale where the group scales, then the translation's algebra
  coordinates ``u1, u2`` in units of half the image side), ``component`` (for a group with
  a discrete part: the pose's component, e.g. 1 for a mirror image under ``o2``);
* ``.npz`` -- the same as arrays (``name``, ``index``, ``label``, ``cluster``,
  ``probabilities``, ``tau``, ``z_cluster``), plus ``canonical`` images ``(N, C, H, W)``
  when asked for, and each pose as a group element: ``pose_matrix`` ``(N, 3, 3)`` (the
  homogeneous matrix ``exp(tau)``), ``pose_geomstats`` (the same poses as points of the
  group's geomstats space, for a group that names one: ``geomstats`` tools such as
  ``FrechetMean`` accept them as they are) and ``pose_group`` (the group's tag); see
  :func:`mcvae_framework.geomstats_bridge.pose_fields`;
* ``.star`` -- a RELION 3.1+ particle STAR file (classes, in-plane angles, shifts,
  probabilities; see :mod:`mcvae_framework.report.star_export` for the conventions).

``clusters`` keeps only the images of the chosen clusters, in any format.

``with_graph`` (the run's own images only: the nodes of its invariant graph) writes the
model's clusters read with its graph (``report.json``'s ``consensus``): ``probabilities``
become each image's averaged with those of its graph neighbours, ``cluster`` their most
probable, and ``model_cluster`` keeps the model's own.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from ..config.components import build
from ..config.experiment import component_config, read_config_file
from ..runtime.data import ConcatenatedSplits, dataset_tensors
from ..runtime.run_layout import RunLayout
from ..errors import ConfigError, DataError
from ..geomstats_bridge import pose_fields
from ..runtime.checkpoint import load_checkpoint
from .consensus import consensus_of_images
from .inference import model_from_checkpoint, predict_dataset, run_checkpoint  # noqa: F401  (run_checkpoint: re-exported)
from .star_export import keep_clusters, require_starfile, write_particles_star
from ..config.plugins import current_registry

FORMATS = (".csv", ".npz", ".parquet", ".star")
ARRAY_SUFFIXES = (".npy", ".npz")
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def data_section_for(source, config=None) -> tuple[dict, Path | None]:
    """The ``data`` config section to predict on, and the folder its relative paths are
    read from.

    :param source: an experiment config file (``.yaml``/``.yml``/``.json``: its ``data``
        section is used, relative paths read from the file's folder), a ``.npy``/``.npz``
        file of images, or a folder of images. Array files and folders are read with the
        run's own data settings where they fit (e.g. the resizing of a run trained on a
        folder), through the data plugin that :func:`own_files_section` picks.
    :param config: the run's config, whose ``data`` section may say how to read such files.
    :raises DataError: the path does not exist or is of no known kind.
    """
    path = Path(source)
    if not path.exists():
        raise DataError(f"--data {source}: no such file or folder; give an experiment config "
                        "(.yaml/.json), a .npy/.npz array file, or a folder of images")
    suffix = path.suffix.lower()
    if path.is_dir() or suffix in ARRAY_SUFFIXES or suffix in declared_suffixes():
        return own_files_section(path, config), None
    if suffix in CONFIG_SUFFIXES:
        data = read_config_file(path)
        if not isinstance(data.get("data"), dict):
            raise ConfigError([("data", "the config has no `data` section to predict on")], str(path))
        return data["data"], path.parent
    readable = sorted(set(ARRAY_SUFFIXES) | declared_suffixes())
    raise DataError(f"--data {source}: unknown kind of file {suffix!r}; give an experiment config "
                    f"({', '.join(CONFIG_SUFFIXES)}), a file an installed data plugin reads ({', '.join(readable)}) "
                    "or a folder of images")


def declared_suffixes() -> set[str]:
    """The file suffixes some registered data plugin reads (``reads_paths``: ``.mrcs``,
    ``.star``, ...)."""
    found = set()
    for entry in current_registry().entries("data"):
        declared = getattr(entry.config_class, "reads_paths", None) or ()
        found.update(d.lower() for d in ((declared,) if isinstance(declared, str) else declared) if d != "folder")
    return found


def own_files_section(path: Path, config=None) -> dict:
    """The data section that reads a user's folder or array file: the one the run's own
    data section gives for it (:meth:`ComponentConfig.own_files_section
    <mcvae_framework.config.registry.ComponentConfig.own_files_section>`), when its plugin reads
    that kind of path (so a folder is resized and converted as in training), else the
    first registered data plugin that declares it reads such paths (``reads_paths`` on its
    config class: ``"folder"`` or the suffixes, e.g. ``(".npy", ".npz")``). These are the
    user's images as they are: nothing moves them."""
    kind = "folder" if path.is_dir() else path.suffix.lower()

    def reads(cls) -> bool:
        declared = getattr(cls, "reads_paths", None) or ()
        return kind in ((declared,) if isinstance(declared, str) else tuple(declared))

    run_data = getattr(config, "data", None) if config is not None else None
    if run_data is not None and reads(type(run_data)):
        return run_data.own_files_section(path)
    for entry in current_registry().entries("data"):
        if reads(entry.config_class):
            return {"type": entry.tag, "path": str(path)}
    raise DataError(f"--data {path}: no installed data plugin reads a {'folder' if kind == 'folder' else kind + ' file'}"
                    " (see `mcvae plugins`); give an experiment config whose data section reads it")


def load_prediction_data(source, split: str | None = None, config=None):
    """Build the dataset named by ``source`` (see :func:`data_section_for`).

    :param split: ``train`` or ``test`` for one split; default every image, in the
        source's own order (the dataset's ``split="all"``; for a plugin that refuses it,
        its train split then its test split).
    :param config: the run's config (how to read a folder or an array file).
    """
    section, base_dir = data_section_for(source, config)
    data_config = component_config("data", section, base_dir=base_dir)
    if split is not None:
        return build("data", data_config, split=split)
    try:
        return build("data", data_config, split="all")
    except ConfigError:
        return ConcatenatedSplits([build("data", data_config, split=s) for s in ("train", "test")])


def check_output_path(out) -> Path:
    """The output file, its format checked before any work is done."""
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise ConfigError([("--out", f"{out}: unknown output format {out.suffix or '(no extension)'!r}; "
                            f"use one of {', '.join(FORMATS)}")])
    if out.suffix.lower() == ".parquet":
        _require_parquet_engine()
    if out.suffix.lower() == ".star":
        require_starfile()
    return out


def _require_parquet_engine():
    # pandas and a parquet engine are optional dependencies: looked for only when asked
    try:
        import pandas  # noqa: F401
    except ImportError:
        raise DataError("writing .parquet needs pandas and pyarrow: `pip install pandas pyarrow` "
                        "(or write .csv / .npz instead)") from None
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        try:
            import fastparquet  # noqa: F401
        except ImportError:
            raise DataError("writing .parquet needs a parquet engine for pandas: `pip install pyarrow` "
                            "(or write .csv / .npz instead)") from None


def predictions(model, dataset, *, batch_size: int = 256, with_canonical: bool = False,
                split_column: bool = False) -> dict[str, np.ndarray]:
    """Predictions for every item of ``dataset`` as numpy arrays (see the module docstring).

    :param split_column: also return each item's ``split`` (when the dataset tells it).
    """
    tensors, outputs = predict_dataset(model, dataset, batch_size)
    return prediction_arrays(model, dataset, tensors, outputs, with_canonical=with_canonical,
                             split_column=split_column)


def prediction_arrays(model, dataset, tensors: dict, outputs: dict, *, with_canonical: bool = False,
                      split_column: bool = False) -> dict[str, np.ndarray]:
    """:func:`predictions` from the stacked items and the model's outputs for them
    (:func:`~mcvae_framework.report.inference.predict_dataset`)."""
    n = len(tensors["image"])
    sources = getattr(dataset, "source_indices", None)
    result = {
        "index": np.asarray(sources, dtype=np.int64) if sources is not None else np.arange(n),
        "cluster": outputs["cluster"].numpy().astype(np.int64),
        "probabilities": outputs["probabilities"].float().numpy(),
        "z_cluster": outputs["z_cluster"].float().numpy(),
    }
    if "tau" in outputs:
        result["tau"] = outputs["tau"].float().numpy()
        if "component" in outputs:  # a group with a discrete part: e.g. 1 for a mirror image
            result["component"] = outputs["component"].numpy().astype(np.int64)
        if model.group is not None:  # .npz only: homogeneous matrices, geomstats points
            result.update(pose_fields(model.group, outputs["tau"], outputs.get("component")))
    if "label" in tensors:
        result["label"] = tensors["label"].numpy().astype(np.int64)
    names = getattr(dataset, "item_names", None)
    if names is not None:
        result["name"] = np.asarray([str(name) for name in names], dtype=str)
    if split_column:
        splits = getattr(dataset, "item_splits", None)
        splits = splits if splits is not None else [getattr(dataset, "split", "")] * n
        result["split"] = np.asarray(splits, dtype=str)
    if with_canonical:
        result["canonical"] = outputs["canonical"].float().numpy()
    return result


def prediction_table(result: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The per-image columns of a ``.csv`` / ``.parquet`` file, in order: the file name
    first (where the data has names), then the source index."""
    columns = {"name": result["name"]} if "name" in result else {}
    columns["index"] = result["index"]
    if "split" in result:
        columns["split"] = result["split"]
    if "label" in result:
        columns["label"] = result["label"]
    columns["cluster"] = result["cluster"]
    if "model_cluster" in result:
        columns["model_cluster"] = result["model_cluster"]
    for k in range(result["probabilities"].shape[1]):
        columns[f"probability_{k}"] = result["probabilities"][:, k]
    for j in range(result["tau"].shape[1] if "tau" in result else 0):
        columns[f"tau_{j}"] = result["tau"][:, j]
    if "component" in result:
        columns["component"] = result["component"]
    return columns


def write_predictions(result: dict[str, np.ndarray], out) -> Path:
    """Write ``result`` to ``out`` in the format its extension names."""
    out = check_output_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = out.suffix.lower()
    if suffix == ".star":
        raise ConfigError([("--out", f"{out}: a STAR file needs the images' source; write it with predict_run")])
    if suffix == ".npz":
        np.savez_compressed(out, **result)
        return out
    if "canonical" in result:
        raise ConfigError([("--canonical", f"canonical images do not fit a {suffix} table; write .npz to get them")])
    columns = prediction_table(result)
    if suffix == ".csv":
        _write_csv(columns, out)
    else:
        import pandas as pd  # optional dependency, checked by check_output_path

        pd.DataFrame(columns).to_parquet(out, index=False)
    return out


def _write_csv(columns: dict[str, np.ndarray], out: Path) -> None:
    names = list(columns)
    integer = {n for n in names if np.issubdtype(columns[n].dtype, np.integer)}
    text = {n for n in names if columns[n].dtype.kind in "US"}
    with open(out, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")  # quotes a file name holding a comma
        writer.writerow(names)
        for i in range(len(columns["index"])):
            writer.writerow([str(columns[n][i]) if n in text else str(int(columns[n][i])) if n in integer
                             else f"{float(columns[n][i]):.7g}" for n in names])


def default_output(run_dir, data, split: str | None = None) -> Path:
    """Where ``mcvae predict`` writes without ``--out``: ``RUN/predictions/<data>.csv``,
    named after the folder, array file or config file (and the split, when one is asked)."""
    source = Path(data)
    stem = source.name if source.is_dir() else source.stem
    stem = stem or "data"
    return RunLayout(run_dir).predictions / (f"{stem}_{split}.csv" if split else f"{stem}.csv")


def predict_run(run_dir, data, out=None, *, split: str | None = None, device: str = "cpu", batch_size: int = 256,
                with_canonical: bool = False, split_column: bool = False, checkpoint: str = "last",
                clusters=None, pixel_size: float | None = None, with_graph: bool = False) -> Path:
    """Predict with a run folder's trained model on ``data`` and write ``out``.

    :param run_dir: a folder written by ``mcvae train``.
    :param data: an experiment config file, a ``.npy``/``.npz`` file or an image folder
        (see :func:`data_section_for`).
    :param out: ``.csv``, ``.npz`` or ``.parquet`` file; default :func:`default_output`.
    :param split: ``train`` or ``test``; default every image (see :func:`load_prediction_data`).
    :param with_canonical: also store the canonical reconstructions (``.npz`` only).
    :param split_column: add a ``split`` column: the split each image belongs to.
    :param checkpoint: ``last`` or ``best`` (``checkpoints/<name>.pt`` of the run).
    :param clusters: keep only the images of these clusters (numbers from 0, as in every
        output); default every image.
    :param pixel_size: Angstrom per pixel for a ``.star`` file (default: the particle
        stack's header, else 1).
    :param with_graph: the clusters read with the run's invariant graph (see the module
        docstring); ``data`` must be the run's own images.
    :returns: the written file.
    """
    out = check_output_path(out if out is not None else default_output(run_dir, data, split))
    if with_canonical and out.suffix.lower() != ".npz":
        raise ConfigError([("--canonical", f"canonical images are only written to .npz files, not {out.name}")])
    source = run_checkpoint(run_dir, checkpoint)
    state = load_checkpoint(source)  # read once: the model, and the graph with --with-graph
    config, model = model_from_checkpoint(state, source, device=device)
    dataset = load_prediction_data(data, split, config=config)
    expected = tuple(getattr(model.encoder, "image_shape", ()) or ())
    if expected and tuple(dataset.image_shape) != expected:
        raise DataError(f"--data {data}: images of shape {tuple(dataset.image_shape)} (C, H, W), but the model in "
                        f"{run_dir} was trained on {expected}; resize/convert them (see the data plugin's options in "
                        "the configuration reference) or pick the matching run")
    with torch.no_grad():
        tensors, outputs = predict_dataset(model, dataset, batch_size)
        result = prediction_arrays(model, dataset, tensors, outputs, with_canonical=with_canonical,
                                   split_column=split_column)
        if with_graph:  # the images and their probabilities passed on: each image read and scored once
            agreed = consensus_of_images(model, config, state.get("graph"), dataset, where=f"--data {data}", batch_size=batch_size,
                                         images=tensors["image"], probabilities=outputs["probabilities"])
            result["model_cluster"] = result["cluster"]
            result["probabilities"] = agreed.numpy()
            result["cluster"] = agreed.argmax(1).numpy().astype(np.int64)
    if clusters is not None:
        kept = keep_clusters({**result, "_row": np.arange(len(result["cluster"]))}, clusters)
        result, rows = {k: v for k, v in kept.items() if k != "_row"}, kept["_row"]
    else:
        rows = np.arange(len(result["cluster"]))
    if out.suffix.lower() == ".star":
        images = None
        if getattr(dataset, "particle_stack", None) is None:  # the images go into a stack beside the file
            images = dataset_tensors(dataset, keys=["image"], indices=torch.as_tensor(rows))["image"].numpy()
        return write_particles_star(result, out, dataset=dataset, images=images, pixel_size=pixel_size,
                                    model_side=int(dataset.image_shape[-1]))
    return write_predictions(result, out)
