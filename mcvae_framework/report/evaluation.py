"""Metrics of a trained MCE-VAE, and ``evaluate_run`` behind ``mcvae evaluate``.

What is measured (each block of ``report.json``):

* **clustering** -- accuracy after the best one-to-one matching of clusters to labels
  (Hungarian algorithm), NMI and ARI (scikit-learn), cluster sizes;
* **pose** (datasets that know the true pose ``tau``) -- the group's own ``distance``
  between the predicted pose ``exp(tau_hat)`` and the true one, under the group's own
  error keys (for the built-in groups: rotation in degrees wrapped to [0, 180],
  translation, log-scale; a group's ``rotation_error``, where it has one, is also reported
  modulo 180 degrees for symmetric shapes). The learned pose is only defined up to a
  fixed offset per cluster: with ``x = g_true x0 = g_pred D`` the decoded canonical is
  ``D = h x0`` where ``h = g_pred^-1 g_true``, and the model may pick any ``h`` per
  cluster (its canonical "7" need not be upright). So errors are also reported after
  removing the best constant offset per cluster (``g_pred h_c`` against ``g_true``),
  chosen by the group's ``primary_error`` and averaged by geomstats on the group's
  geomstats space (``FrechetMean`` / ``ExponentialBarycenter``) where the group names one,
  else by a hand-written intrinsic mean (``offset_mean`` says which); ``offset_dispersion``
  is how far each cluster's own offsets lie from its fitted one;
* **canonical** (datasets that know the canonical image) -- mean squared error of the
  decoded canonical image against the true one, raw and after moving the decoded image by
  its cluster's offset ``h_c^-1`` into the dataset's frame;
* **invariance** -- how much the invariant posterior means move when the test images are
  moved by random group elements (relative to the spread of those means), and how often
  the cluster assignment stays the same;
* **elbo** -- every term of the loss on the split (``losses.elbo_terms``, no gradients).

The pose and canonical blocks live in :mod:`mcvae_framework.report.pose_evaluation`, the files in
:mod:`mcvae_framework.report.reports`; the model runs over the split through
:mod:`mcvae_framework.report.inference`. ("Invariance" here is the *metric* below; the loss term
of the same name is :func:`mcvae_framework.model.losses.invariance_terms`.)
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from ..config.components import build
from .consensus import consensus_report
from .inference import model_from_checkpoint, predict_dataset
from ..model.losses import elbo_terms
from ..model.pose_terms import random_elements
from ..runtime.checkpoint import load_checkpoint
from ..runtime.run_layout import RunLayout
from .pose_evaluation import (  # noqa: F401  (re-exported: the metrics are one import away)
    POSE_MEAN_PATHS,
    PoseMean,
    apply_offsets,
    best_offset,
    canonical_metrics,
    mod180,
    offset_dispersion,
    per_cluster_offsets,
    pose_metrics,
    primary_error_key,
    rotation_error_key,
)
from .reports import json_safe, report_markdown, write_report  # noqa: F401  (re-exported)

# --------------------------------------------------------------------- clustering


def contingency(labels, clusters) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts of (label, cluster) pairs.

    :returns: ``(table, label_values, cluster_values)``; ``table[i, j]`` counts images of
        label ``label_values[i]`` assigned to cluster ``cluster_values[j]``.
    """
    labels = np.asarray(labels).ravel()
    clusters = np.asarray(clusters).ravel()
    if labels.shape != clusters.shape:
        raise ValueError(f"labels ({labels.size}) and clusters ({clusters.size}) differ in length")
    label_values, label_idx = np.unique(labels, return_inverse=True)
    cluster_values, cluster_idx = np.unique(clusters, return_inverse=True)
    table = np.zeros((label_values.size, cluster_values.size), dtype=np.int64)
    np.add.at(table, (label_idx, cluster_idx), 1)
    return table, label_values, cluster_values


def hungarian_accuracy(labels, clusters) -> tuple[float, dict[int, int]]:
    """Clustering accuracy after the best one-to-one matching of clusters to labels.

    Clusters left without a label (more clusters than labels) count as wrong, as in the
    literature (VaDE, ClusterGAN).

    :param labels: true labels ``(N,)``.
    :param clusters: cluster ids ``(N,)``.
    :returns: ``(accuracy, {cluster: matched label})``.
    """
    table, label_values, cluster_values = contingency(labels, clusters)
    if table.sum() == 0:
        return float("nan"), {}
    rows, cols = linear_sum_assignment(table, maximize=True)
    accuracy = table[rows, cols].sum() / table.sum()
    mapping = {int(cluster_values[c]): int(label_values[r]) for r, c in zip(rows, cols)}
    return float(accuracy), mapping


def clustering_metrics(labels, clusters, n_clusters: int | None = None) -> dict:
    """Accuracy (Hungarian), NMI, ARI and cluster sizes.

    :param labels: true labels ``(N,)``.
    :param clusters: cluster ids ``(N,)`` in ``0..n_clusters-1``.
    :param n_clusters: number of mixture components (sizes of empty clusters are 0).
    """
    labels = np.asarray(labels).ravel()
    clusters = np.asarray(clusters).ravel()
    accuracy, mapping = hungarian_accuracy(labels, clusters)
    k = int(n_clusters) if n_clusters is not None else int(clusters.max()) + 1
    sizes = np.bincount(clusters.astype(np.int64), minlength=k)
    return {
        "accuracy": accuracy,
        "nmi": float(normalized_mutual_info_score(labels, clusters)),
        "ari": float(adjusted_rand_score(labels, clusters)),
        "n_clusters": k,
        "n_classes": int(np.unique(labels).size),
        "clusters_used": int((sizes > 0).sum()),
        "cluster_sizes": sizes.tolist(),
        "cluster_to_label": {str(c): l for c, l in sorted(mapping.items())},
    }


# ---------------------------------------------------------------------- invariance


def relative_change(before: torch.Tensor, after: torch.Tensor) -> float:
    """Mean distance moved, relative to the mean distance of ``before`` from its centre.

    0 means perfectly invariant; 1 means the change is as large as the typical spread of
    the latent (as uninformative as a random other image).
    """
    spread = (before - before.mean(0, keepdim=True)).norm(dim=1).mean()
    moved = (after - before).norm(dim=1).mean()
    return float(moved / spread.clamp_min(1e-12))


@torch.no_grad()
def invariance_metrics(model, images: torch.Tensor, *, n_actions: int = 4, batch_size: int = 256,
                       seed: int = 0) -> dict:
    """Change of the invariant posterior means under random group actions.

    Each image is moved by ``n_actions`` elements drawn from the group's configured pose
    distribution (``group.sample``, and ``sample_component`` for a group with a discrete
    part; seeded), encoded again, and compared with the
    original's encoding (:func:`relative_change`); ``cluster_agreement`` is the fraction of
    moved copies that keep the original's cluster.
    """
    group = model.group
    if group is None:
        return {}
    gen = torch.Generator().manual_seed(seed)
    device = _device_of(model)
    keys = ("z_cluster", "z_style")
    before, after = {k: [] for k in keys}, {k: [] for k in keys}
    same = []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device)
        enc = model.encode(x)
        probs = model.prior.responsibilities(enc.z_cluster.mean)
        for _ in range(n_actions):
            moved_enc = model.encode(group.act(x, random_elements(group, len(x), gen, x)))
            for k in keys:
                post, post_m = getattr(enc, k), getattr(moved_enc, k)
                if post is not None and post.mean.shape[1] > 0:
                    before[k].append(post.mean.cpu())
                    after[k].append(post_m.mean.cpu())
            moved_probs = model.prior.responsibilities(moved_enc.z_cluster.mean)
            same.append((moved_probs.argmax(1) == probs.argmax(1)).cpu())
    out = {"n_actions": n_actions}
    for k in keys:
        if before[k]:
            out[f"{k}_relative_change"] = relative_change(torch.cat(before[k]), torch.cat(after[k]))
    out["cluster_agreement"] = float(torch.cat(same).float().mean())
    return out


# ------------------------------------------------------------------------- runs


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def elbo_metrics(model, tensors: dict[str, torch.Tensor], loss_config, *, epoch: int,
                 batch_size: int = 256, seed: int = 0) -> dict:
    """Every ELBO term averaged over the split (weighted by batch size), no gradients."""
    model.eval()
    device = _device_of(model)
    gen = torch.Generator().manual_seed(seed)  # CPU, like the trainer's
    n = len(tensors["image"])
    totals: dict[str, float] = {}
    for start in range(0, n, batch_size):
        batch = {k: v[start:start + batch_size].to(device) for k, v in tensors.items()}
        terms = elbo_terms(model, batch, loss_config, epoch=epoch, generator=gen)
        size = len(batch["image"])
        for key, value in terms.items():
            totals[key] = totals.get(key, 0.0) + float(value) * size
    return {k: v / n for k, v in totals.items()}


def evaluate_model(model, config, dataset, *, batch_size: int = 256, n_actions: int = 4,
                   seed: int = 0, with_elbo: bool = True, pose_mean: str = "auto") -> dict:
    """All metrics of ``model`` on ``dataset`` (see the module docstring).

    :param model: a trained :class:`~mcvae_framework.model.mcevae.MCEVAE`.
    :param config: its experiment config (for the loss section).
    :param dataset: an :class:`~mcvae_framework.interfaces.ImageDataset`.
    :returns: the report dict (top-level ``accuracy``, ``nmi``, ``ari`` when labels exist).
    """
    tensors, outputs = predict_dataset(model, dataset, batch_size)
    clusters = outputs["cluster"].numpy()
    report: dict = {"split": getattr(dataset, "split", None), "n_images": int(len(clusters))}
    k = int(outputs["probabilities"].shape[1])
    if "label" in tensors:
        report["clustering"] = clustering_metrics(tensors["label"].numpy(), clusters, n_clusters=k)
        for key in ("accuracy", "nmi", "ari"):
            report[key] = report["clustering"][key]
    else:
        report["clustering"] = {"n_clusters": k, "cluster_sizes": np.bincount(clusters, minlength=k).tolist()}
    report["reconstruction"] = {"mse": float(((outputs["reconstruction"] - tensors["image"].float()) ** 2).mean())}
    group = model.group
    offsets = None
    if group is not None and "pose" in tensors and "tau" in outputs:
        pose = pose_metrics(group, outputs["tau"], tensors["pose"], clusters, pose_mean=pose_mean, seed=seed,
                            component_pred=outputs.get("component"), component_true=tensors.get("pose_component"))
        offsets = pose.pop("_offsets")
        report["pose"] = pose
    if "canonical" in tensors:
        report["canonical"] = canonical_metrics(group, outputs["canonical"], tensors["canonical"], clusters, offsets)
    if group is not None:
        report["invariance"] = invariance_metrics(model, tensors["image"], n_actions=n_actions,
                                                  batch_size=batch_size, seed=seed)
    if with_elbo:
        epoch = getattr(getattr(config, "training", None), "epochs", 0)
        report["elbo"] = elbo_metrics(model, tensors, config.loss, epoch=epoch, batch_size=batch_size, seed=seed)
    return report


def evaluate_run(run_dir, split: str = "test", *, device: str = "cpu", batch_size: int = 256,
                 n_actions: int = 4, seed: int = 0, pose_mean: str = "auto") -> dict:
    """Evaluate a run folder's last checkpoint; write ``report.json`` and ``report.md``.

    :param run_dir: a folder written by ``mcvae train``.
    :param split: which split of the run's dataset to score (``train`` or ``test``).
    :param device: where to run the model.
    :param pose_mean: how per-cluster pose offsets are averaged (see :class:`PoseMean`):
        ``auto`` uses geomstats where the group names a geomstats space.
    :returns: the report (also written to ``RUN/report.json``; ``report.md`` holds the
        same as tables).
    """
    run_dir = Path(run_dir)
    last = RunLayout(run_dir).last
    checkpoint = load_checkpoint(last)  # read once: the model, and the graph
    config, model = model_from_checkpoint(checkpoint, last, device=device)
    dataset = build("data", config.data, split=split)
    report = evaluate_model(model, config, dataset, batch_size=batch_size, n_actions=n_actions, seed=seed,
                            pose_mean=pose_mean)
    report = {"run_dir": str(run_dir), **report, "collapse": collapse_summary(report, run_dir)}
    graph = graph_summary(checkpoint)
    if graph is not None:
        report["graph"] = graph
        consensus = consensus_report(model, config, checkpoint["graph"], split, dataset, batch_size=batch_size)
        if consensus is not None:
            report["consensus"] = consensus
    write_report(report, run_dir)
    return report


def graph_summary(checkpoint: dict) -> dict | None:
    """What the invariant graph chose and how the model kept to it, from a run's loaded
    ``checkpoint``: the graph's settings (with the candidates it compared and their label-free
    criterion, where it chose), its cluster sizes, and the checks of the model against it
    (``train/graph_check``: agreement on the graph's unanimous images, empty components,
    repairs). ``None`` for a run without the graph."""
    graph = checkpoint.get("graph")
    if graph is None:
        return None
    summary = dict(graph["info"])
    summary["seconds"] = graph["seconds"]
    check = checkpoint.get("graph_check")
    if check is not None:
        checks = check["checks"]
        summary["model_checks"] = {
            "repairs": check["repairs"],
            "restored": any(c["action"] == "restored" for c in checks),
            "last": checks[-1] if checks else None,
            "checks": checks,
        }
    return summary


def collapse_summary(report: dict, run_dir) -> dict:
    """Whether the mixture collapsed: components left empty on the scored split, and the
    components the trainer re-seeded during training (``reseeded_components`` in
    ``metrics.csv``; see ``loss.reseed_below``)."""
    sizes = report.get("clustering", {}).get("cluster_sizes", [])
    reseeded = 0.0
    metrics = RunLayout(run_dir).metrics
    if metrics.is_file():
        with metrics.open(newline="", encoding="utf-8") as handle:
            reseeded = sum(float(row.get("train_reseeded_components") or 0) for row in csv.DictReader(handle))
    return {"empty_components": int(sum(1 for size in sizes if size == 0)),
            "smallest_cluster": int(min(sizes)) if sizes else None,
            "reseeded_during_training": int(reseeded)}
