"""``mcvae predict``: cluster, cluster probabilities and pose of new images, to a file.

The output format follows the file's extension:

* ``.csv`` / ``.parquet`` -- one row per image: ``index``, ``label`` (when the data has
  labels), ``cluster``, ``probability_0..K-1``, ``tau_0..dim-1`` (the pose posterior mean
  in the group's algebra coordinates; for the built-in 2-D groups ``tau_0`` is the angle
  in radians);
* ``.npz`` -- the same as arrays (``index``, ``label``, ``cluster``, ``probabilities``,
  ``tau``, ``z_cluster``), plus ``canonical`` images ``(N, C, H, W)`` when asked for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError, DataError

FORMATS = (".csv", ".npz", ".parquet")
ARRAY_SUFFIXES = (".npy", ".npz")
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def data_section_for(source) -> dict:
    """The ``data`` config section to predict on.

    :param source: an experiment config file (``.yaml``/``.yml``/``.json``: its ``data``
        section is used), a ``.npy``/``.npz`` file of images (the ``arrays`` dataset), or
        a folder of images (the ``image_folder`` dataset).
    :raises DataError: the path does not exist or is of no known kind.
    """
    from .config import read_config_file

    path = Path(source)
    if not path.exists():
        raise DataError(f"--data {source}: no such file or folder; give an experiment config "
                        "(.yaml/.json), a .npy/.npz array file, or a folder of images")
    suffix = path.suffix.lower()
    if path.is_dir():
        return {"type": "image_folder", "path": str(path)}
    if suffix in ARRAY_SUFFIXES:
        return {"type": "arrays", "path": str(path)}
    if suffix in CONFIG_SUFFIXES:
        data = read_config_file(path)
        if not isinstance(data.get("data"), dict):
            raise ConfigError([("data", "the config has no `data` section to predict on")], str(path))
        return data["data"]
    raise DataError(f"--data {source}: unknown kind of file {suffix!r}; give an experiment config "
                    f"({', '.join(CONFIG_SUFFIXES)}), an array file ({', '.join(ARRAY_SUFFIXES)}) "
                    "or a folder of images")


def _whole_file_section(section: dict):
    """A user's own arrays or image folder as ONE split in file order, when the dataset
    plugin accepts ``test_fraction: 0``; ``None`` when it insists on a held-out split."""
    from .config import component_config

    try:
        return component_config("data", {**section, "test_fraction": 0.0})
    except ConfigError:
        return None


class _Concatenated:
    """Both splits of a dataset, train then test, as one (for a user's own files)."""

    def __init__(self, parts):
        self.parts = parts
        self.image_shape = parts[0].image_shape
        self.split = "+".join(p.split for p in parts)

    def as_tensors(self):
        from .evaluation import dataset_tensors

        tensors = [dataset_tensors(p) for p in self.parts]
        merged = {k: torch.cat([t[k] for t in tensors]) for k in tensors[0]}
        merged["split"] = torch.cat([torch.full((len(t["image"]),), i) for i, t in enumerate(tensors)])
        merged["index_in_split"] = torch.cat([torch.arange(len(t["image"])) for t in tensors])
        return merged


def load_prediction_data(source, split: str | None = None):
    """Build the dataset named by ``source`` (see :func:`data_section_for`).

    :param split: which split to read. Default: ``test`` for a config file's data; for a
        user's own arrays or folder every image -- in file order when the dataset plugin
        accepts ``test_fraction: 0``, otherwise its train split then its test split (the
        output then says each row's ``split`` (0 train, 1 test) and ``index_in_split``).
    """
    from .build import build

    section = data_section_for(source)
    if Path(source).suffix.lower() in CONFIG_SUFFIXES or split is not None:
        return build("data", section, split=split or "test")
    whole = _whole_file_section(section)
    if whole is not None:
        return build("data", whole, split="train")
    return _Concatenated([build("data", section, split=s) for s in ("train", "test")])


def check_output_path(out) -> Path:
    """The output file, its format checked before any work is done."""
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise ConfigError([("--out", f"{out}: unknown output format {out.suffix or '(no extension)'!r}; "
                            f"use one of {', '.join(FORMATS)}")])
    if out.suffix.lower() == ".parquet":
        _require_parquet_engine()
    return out


def _require_parquet_engine():
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


def predictions(model, dataset, *, batch_size: int = 256, with_canonical: bool = False) -> dict[str, np.ndarray]:
    """Predictions for every item of ``dataset`` as numpy arrays (see the module docstring)."""
    from .evaluation import dataset_tensors, model_outputs

    tensors = dataset_tensors(dataset)
    outputs = model_outputs(model, tensors["image"], batch_size)
    result = {
        "index": np.arange(len(tensors["image"])),
        "cluster": outputs["cluster"].numpy().astype(np.int64),
        "probabilities": outputs["probabilities"].float().numpy(),
        "z_cluster": outputs["z_cluster"].float().numpy(),
    }
    if "tau" in outputs:
        result["tau"] = outputs["tau"].float().numpy()
    if "label" in tensors:
        result["label"] = tensors["label"].numpy().astype(np.int64)
    for key in ("split", "index_in_split"):  # both splits of a user's own files
        if key in tensors:
            result[key] = tensors[key].numpy().astype(np.int64)
    if with_canonical:
        result["canonical"] = outputs["canonical"].float().numpy()
    return result


def prediction_table(result: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The per-image columns of a ``.csv`` / ``.parquet`` file, in order."""
    columns = {"index": result["index"]}
    for key in ("split", "index_in_split"):
        if key in result:
            columns[key] = result[key]
    if "label" in result:
        columns["label"] = result["label"]
    columns["cluster"] = result["cluster"]
    for k in range(result["probabilities"].shape[1]):
        columns[f"probability_{k}"] = result["probabilities"][:, k]
    for j in range(result["tau"].shape[1] if "tau" in result else 0):
        columns[f"tau_{j}"] = result["tau"][:, j]
    return columns


def write_predictions(result: dict[str, np.ndarray], out) -> Path:
    """Write ``result`` to ``out`` in the format its extension names."""
    out = check_output_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = out.suffix.lower()
    if suffix == ".npz":
        np.savez_compressed(out, **result)
        return out
    if "canonical" in result:
        raise ConfigError([("--canonical", f"canonical images do not fit a {suffix} table; write .npz to get them")])
    columns = prediction_table(result)
    if suffix == ".csv":
        _write_csv(columns, out)
    else:
        import pandas as pd

        pd.DataFrame(columns).to_parquet(out, index=False)
    return out


def _write_csv(columns: dict[str, np.ndarray], out: Path) -> None:
    names = list(columns)
    integer = {n for n in names if np.issubdtype(columns[n].dtype, np.integer)}
    with open(out, "w", encoding="utf-8", newline="") as handle:
        handle.write(",".join(names) + "\n")
        for i in range(len(columns["index"])):
            cells = [str(int(columns[n][i])) if n in integer else f"{float(columns[n][i]):.7g}" for n in names]
            handle.write(",".join(cells) + "\n")


def predict_run(run_dir, data, out, *, split: str | None = None, device: str = "cpu", batch_size: int = 256,
                with_canonical: bool = False) -> Path:
    """Predict with a run folder's trained model on ``data`` and write ``out``.

    :param run_dir: a folder written by ``mcvae train``.
    :param data: an experiment config file, a ``.npy``/``.npz`` file or an image folder
        (see :func:`data_section_for`).
    :param out: ``.csv``, ``.npz`` or ``.parquet`` file.
    :param split: the split to read (see :func:`load_prediction_data`).
    :param with_canonical: also store the canonical reconstructions (``.npz`` only).
    :returns: the written file.
    """
    from .training import load_trained_model

    out = check_output_path(out)
    if with_canonical and out.suffix.lower() != ".npz":
        raise ConfigError([("--canonical", f"canonical images are only written to .npz files, not {out.name}")])
    dataset = load_prediction_data(data, split)
    _, model = load_trained_model(run_dir, device=device)
    model.eval()
    expected = tuple(getattr(model.encoder, "image_shape", ()) or ())
    if expected and tuple(dataset.image_shape) != expected:
        raise DataError(f"--data {data}: images of shape {tuple(dataset.image_shape)} (C, H, W), but the model in "
                        f"{run_dir} was trained on {expected}; resize/convert them (image_folder has resize and "
                        "grayscale options) or pick the matching run")
    with torch.no_grad():
        result = predictions(model, dataset, batch_size=batch_size, with_canonical=with_canonical)
    return write_predictions(result, out)
