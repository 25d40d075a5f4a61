"""A run's results as a scientist reads them (``mcvae report RUN``; ``mcvae evaluate`` writes
them too): the class averages (``class_averages.png``, ``class_averages.json`` and, for
images read from an MRC particle stack, ``class_averages.mrcs``) and the cluster gallery
``report.html`` (:mod:`mcvae_framework.report.gallery`), all in the run folder.
"""

from __future__ import annotations

import json
import shlex
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..config.components import build
from ..errors import ConfigError, DataError
from ..runtime.checkpoint import atomic_write_text
from ..runtime.data import ConcatenatedSplits
from ..runtime.run_layout import RunLayout
from .class_averages import class_averages, class_averages_figure, tile_caption, write_mrcs
from .evaluation import contingency, hungarian_accuracy
from .gallery import Card, Member, confusion_html, gallery_html, png_bytes
from .inference import load_run, predict_dataset
from .plotting import prototype_images, read_metrics, training_curves_figure
from .reports import json_safe

#: the selection command's output file, in the run folder.
SELECTION_FILE = "selection.star"


def run_dataset(config, split: str):
    """The run's own data, one split (``train``, ``test``) or ``all`` (every image in the
    source's order; train then test for a plugin that refuses ``all``)."""
    if split != "all":
        return build("data", config.data, split=split)
    try:
        return build("data", config.data, split="all")
    except ConfigError:
        return ConcatenatedSplits([build("data", config.data, split=s) for s in ("train", "test")])


def item_ids(dataset, n: int) -> tuple[list, str]:
    """Each item's id and what it is: its file name (``name``) or its position in the
    source (``index``, the row ``mcvae predict`` writes it in)."""
    names = getattr(dataset, "item_names", None)
    if names is not None:
        return [str(name) for name in names], "name"
    sources = getattr(dataset, "source_indices", None)
    return ([int(i) for i in sources] if sources is not None else list(range(n))), "index"


def model_pixel_size(dataset, side: int) -> float | None:
    """Angstrom per pixel of the images as the model reads them (a stack's own pixel size,
    scaled by any downsampling), or ``None``."""
    stack = getattr(dataset, "particle_stack", None)
    if stack is None or not stack.pixel_size:
        return None
    return float(stack.pixel_size) * stack.side / side


def pose_histogram(group, tau: torch.Tensor | None, members: np.ndarray, bins: int = 24):
    """Counts, edges and axis name of the members' first pose coordinate (degrees for an
    angle)."""
    if group is None or tau is None or tau.shape[1] == 0:
        return np.zeros(bins), np.linspace(-1, 1, bins + 1), "no pose (no group)"
    names = tuple(getattr(group, "coordinate_names", ()) or ())
    values = tau[:, 0].double().numpy()
    if names and names[0] == "theta":
        values, span, name = np.degrees(values), (-180.0, 180.0), "angle (degrees)"
    else:
        span = (float(values.min()), float(values.max()) + 1e-9)
        name = f"pose tau_0 ({names[0]})" if names else "pose tau_0"
    counts, edges = np.histogram(values[members], bins=bins, range=span)
    return counts, edges, name


def _label_text(k: int, table, label_values, cluster_values, class_names) -> str | None:
    where = np.flatnonzero(cluster_values == k)
    if not where.size or table[:, where[0]].sum() == 0:
        return None
    column = table[:, where[0]]
    top = int(column.argmax())
    value = int(label_values[top])
    name = class_names[value] if class_names and value < len(class_names) else str(value)
    return f"most common label: {name} ({column[top] / column.sum():.0%} of the cluster)"


def selection_command(run_dir: Path, split: str) -> tuple[str, str]:
    """The command line that writes the kept clusters, cut where the cluster list goes."""
    prefix = ["mcvae", "predict", str(run_dir), "--data", str(RunLayout(run_dir).config)]
    if split != "all":
        prefix += ["--split", split]
    return (" ".join(shlex.quote(p) for p in prefix) + " --clusters ",
            " --out " + shlex.quote(str(run_dir / SELECTION_FILE)))


def curves_png(run_dir: Path) -> bytes | None:
    metrics = RunLayout(run_dir).metrics
    if not metrics.is_file() or not read_metrics(metrics):
        return None
    with tempfile.TemporaryDirectory() as scratch:
        return training_curves_figure(metrics, Path(scratch) / "curves.png").read_bytes()


def write_class_averages(run_dir: Path, averages, split: str, n_images: int, stacked: bool) -> dict[str, Path]:
    """``class_averages.png``, ``.json`` and (for a particle stack) ``.mrcs`` in ``run_dir``."""
    written = {"class_averages.png": class_averages_figure(averages, run_dir / "class_averages.png",
                                                           title=f"class averages ({split} split)")}
    summary = {"split": split, "n_images": n_images, "pixel_size": averages.pixel_size,
               "classes": averages.summary(), "frc": averages.frc.tolist(), "member_frc": averages.member_frc.tolist()}
    atomic_write_text(run_dir / "class_averages.json", json.dumps(json_safe(summary), indent=1) + "\n")
    written["class_averages.json"] = run_dir / "class_averages.json"
    if stacked:
        written["class_averages.mrcs"] = write_mrcs(averages.averages, run_dir / "class_averages.mrcs",
                                                    averages.pixel_size)
    return written


def cluster_cards(model, images, outputs, averages, ids, n_members: int, labels=None, class_names=None,
                  seed: int = 0) -> list[Card]:
    """One :class:`~mcvae_framework.report.gallery.Card` per cluster."""
    clusters = outputs["cluster"].numpy()
    chosen = outputs["probabilities"].float().gather(1, outputs["cluster"].view(-1, 1)).view(-1).numpy()
    prototypes = prototype_images(model, n_poses=0, seed=seed)[0][:, 0].cpu().numpy()
    if labels is not None:
        table, label_values, cluster_values = contingency(labels, clusters)

    def shown(picks):
        return [Member(str(ids[i]), png_bytes(images[i].numpy()), float(chosen[i])) for i in picks]

    cards = []
    for cluster in range(len(averages.sizes)):
        members = np.flatnonzero(clusters == cluster)
        order = members[np.argsort(-chosen[members], kind="stable")]
        counts, edges, pose_name = pose_histogram(model.group, outputs.get("tau"), members)
        cards.append(Card(
            cluster=cluster, size=len(members),
            facts=tile_caption(averages, cluster).replace(f"cluster {cluster} · ", "").split("\n"),
            average_png=png_bytes(averages.averages[cluster]) if len(members) else None,
            prototype_png=png_bytes(prototypes[cluster], normalise=False),
            confident=shown(order[:n_members]), doubtful=shown(order[::-1][:n_members]),
            pose_counts=counts, pose_edges=edges, pose_name=pose_name,
            label_text=(_label_text(cluster, table, label_values, cluster_values, class_names)
                        if labels is not None else None),
            member_ids=[ids[i] for i in members],
        ))
    return cards


def label_summary(labels, clusters, k: int, class_names=None) -> tuple[str, str]:
    """The accuracy line and the confusion table's HTML (label x cluster, matched cells marked)."""
    table, label_values, cluster_values = contingency(labels, clusters)
    accuracy, mapping = hungarian_accuracy(labels, clusters)
    names = [class_names[int(v)] if class_names and int(v) < len(class_names) else str(int(v)) for v in label_values]
    full = np.zeros((len(label_values), k), dtype=np.int64)
    full[:, cluster_values] = table
    matched = {c: int(np.flatnonzero(label_values == label)[0]) for c, label in mapping.items()}
    return (f"accuracy {accuracy:.3f} (Hungarian matching of clusters to labels)",
            confusion_html(full, names, list(range(k)), matched))


def makes_run_report(model) -> bool:
    """Whether :func:`write_run_report` can report on ``model``: class averages, their FRC and
    the gallery are made for 2-D images, not for ``(C, D, H, W)`` volumes."""
    return len(model.image_shape) == 3


@torch.no_grad()
def write_run_report(run_dir, split: str = "test", *, checkpoint: str = "last", device: str = "cpu",
                     batch_size: int = 256, n_members: int = 6, seed: int = 0) -> dict[str, Path]:
    """Class averages and ``report.html`` of a run folder's model on one split of its data.

    :param split: ``test``, ``train`` or ``all``.
    :param n_members: members shown per card among the most, and the least, confident.
    :returns: ``{name: path}`` of the written files.
    """
    run_dir = Path(run_dir)
    config, model = load_run(run_dir, checkpoint, device=device)
    if not makes_run_report(model):
        raise DataError(f"{run_dir}: the model reads volumes {tuple(model.image_shape)} (C, D, H, W); class averages "
                        "and report.html are made for 2-D images (`mcvae evaluate` writes report.json and report.md for "
                        "volumes)")
    dataset = run_dataset(config, split)
    tensors, outputs = predict_dataset(model, dataset, batch_size)
    images, clusters = tensors["image"], outputs["cluster"].numpy()
    k = int(outputs["probabilities"].shape[1])
    averages = class_averages(images, clusters, outputs["probabilities"].float(), group=model.group,
                              tau=outputs.get("tau"), component=outputs.get("component"), n_clusters=k, seed=seed,
                              batch_size=batch_size,
                              pixel_size=model_pixel_size(dataset, int(images.shape[-1])))
    written = write_class_averages(run_dir, averages, split, len(clusters),
                                   stacked=getattr(dataset, "particle_stack", None) is not None)
    ids, id_kind = item_ids(dataset, len(clusters))
    labels = tensors["label"].numpy() if "label" in tensors else None
    class_names = getattr(dataset, "class_names", None)
    cards = cluster_cards(model, images, outputs, averages, ids, n_members, labels, class_names, seed)
    lines = [f"run {run_dir} · {split} split · {len(clusters)} images · {k} clusters "
             f"({int((averages.sizes > 0).sum())} used)"]
    confusion = None
    if labels is not None:
        accuracy_line, confusion = label_summary(labels, clusters, k, class_names)
        lines.append(accuracy_line)
    prefix, suffix = selection_command(run_dir, split)
    page = gallery_html(title=f"Clusters of {run_dir.name}", run=str(run_dir), split=split, cards=cards,
                        command_prefix=prefix, command_suffix=suffix, id_kind=id_kind, summary=lines,
                        confusion=confusion, curves_png=curves_png(run_dir))
    atomic_write_text(run_dir / "report.html", page)
    written["report.html"] = run_dir / "report.html"
    return written


__all__ = ["SELECTION_FILE", "item_ids", "makes_run_report", "run_dataset", "selection_command", "write_run_report"]
