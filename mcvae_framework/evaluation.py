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
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from .errors import ConfigError

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


# --------------------------------------------------------------------------- pose

def mod180(rotation_deg: torch.Tensor) -> torch.Tensor:
    """Rotation error in [0, 180] folded to [0, 90]: a half turn counts as no error."""
    return torch.minimum(rotation_deg, 180.0 - rotation_deg)


def primary_error_key(group, errors: dict) -> str:
    """The key of ``errors`` an offset is chosen to minimise: the group's
    ``primary_error`` when it declares one, else the first key ``distance`` returned."""
    key = getattr(group, "primary_error", None)
    return key if key in errors else next(iter(errors))


def rotation_error_key(group, errors: dict | None = None) -> str | None:
    """The group's ``rotation_error`` key (a rotation in degrees in [0, 180]), or ``None``
    when the group does not rotate (or ``distance`` did not report it)."""
    key = getattr(group, "rotation_error", None)
    if key is None or (errors is not None and key not in errors):
        return None
    return key


def _primary_error(group, errors: dict[str, torch.Tensor], fold: bool) -> torch.Tensor:
    """The error an offset is chosen to minimise, modulo a half turn with ``fold`` when it
    is the group's rotation error."""
    key = primary_error_key(group, errors)
    if fold and key == rotation_error_key(group, errors):
        return mod180(errors[key])
    return errors[key]


def _expand(g: torch.Tensor, n: int) -> torch.Tensor:
    return g.expand(n, *g.shape[-2:]) if g.dim() == 2 else g


def _karcher_mean(group, h: torch.Tensor, start: torch.Tensor, steps: int = 10) -> torch.Tensor:
    """Intrinsic mean of ``h`` (N, 3, 3) by ``m <- m exp(mean log(m^-1 h))`` from ``start``,
    with the group's own (closed-form) ``exp`` and ``log``."""
    m = start
    for _ in range(steps):
        step = group.log(group.compose(_expand(group.inverse(m[None]), len(h)), h)).mean(0, keepdim=True)
        m = group.compose(m[None], group.exp(step))[0]
        if step.abs().max() < 1e-7:
            break
    return m


POSE_MEAN_PATHS = ("auto", "geomstats", "intrinsic")


class PoseMean:
    """How per-cluster pose offsets are averaged, and their dispersion measured.

    * ``geomstats`` -- the group's geomstats space
      (:meth:`~mcvae_framework.interfaces.LieGroup.geomstats_space`): ``FrechetMean``
      with the space's metric, or ``ExponentialBarycenter`` for a Lie group space without
      one; dispersion by the metric's distance (or the norm of geomstats' logarithm). At
      most ``max_points`` elements per mean (a seeded subsample): geomstats' logarithms
      run scipy one matrix at a time.
    * ``intrinsic`` -- the hand-written fixed point ``m <- m exp(mean log(m^-1 h))`` with
      the group's own closed-form ``exp`` and ``log``, dispersion as the root mean square
      norm of ``log(m^-1 h)`` in the group's coordinates; used where geomstats cannot
      serve (a group that names no geomstats space) or when asked for.
    * ``auto`` -- ``geomstats`` where the group names a space, else ``intrinsic``.

    :attr:`path` and :attr:`description` say which one was used (``mcvae evaluate``
    writes them into the report).
    """

    def __init__(self, group, path: str = "auto", *, max_points: int = 256, seed: int = 0):
        if path not in POSE_MEAN_PATHS:
            raise ValueError(f"pose_mean must be one of {', '.join(POSE_MEAN_PATHS)}, got {path!r}")
        self.group = group
        self.max_points = int(max_points)
        self.seed = seed
        self.space = None
        self.failures: list[str] = []
        reason = None
        if path != "intrinsic":
            from . import geomstats_bridge as bridge

            if bridge.has_geomstats_space(group):
                try:
                    self.space = bridge.geomstats_space_of(group)
                except Exception as exc:  # a broken geomstats install or a plugin's space
                    if path == "geomstats":
                        raise
                    reason = f"the group's geomstats space could not be built ({type(exc).__name__}: {exc})"
                if self.space is None and reason is None:
                    reason = "the group's geomstats_space returned None"
            else:
                reason = "the group names no geomstats space"
            if self.space is None and path == "geomstats":
                name = (getattr(getattr(group, "config", None), "type", None) or getattr(group, "name", None)
                        or type(group).__name__)
                raise ConfigError([("pose_mean", f"'geomstats' cannot serve the group {name}: {reason}; "
                                   "use pose_mean 'auto' or 'intrinsic' (the hand-written mean)")],
                                  source="evaluation")
        self.path = "geomstats" if self.space is not None else "intrinsic"
        self.reason = reason
        if self.space is not None:
            from . import geomstats_bridge as bridge

            self.method = bridge.describe(self.space)
        else:
            self.method = "hand-written intrinsic mean m <- m exp(mean log(m^-1 h)) with the group's exp and log"

    @property
    def description(self) -> dict:
        """``{"path", "method", "reason"?, "max_points"?, "failures"?}`` for the report."""
        out = {"path": self.path, "method": self.method}
        if self.path == "geomstats":
            out["max_points"] = self.max_points
        if self.reason:
            out["reason"] = self.reason
        if self.failures:
            out["failures"] = self.failures
        return out

    def _subsample(self, h: torch.Tensor) -> torch.Tensor:
        if len(h) <= self.max_points:
            return h
        gen = torch.Generator().manual_seed(self.seed)
        return h[torch.randperm(len(h), generator=gen)[: self.max_points]]

    def mean(self, h: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """The mean ``(3, 3)`` of elements ``h`` ``(N, 3, 3)``, from ``start``."""
        if self.space is not None:
            from . import geomstats_bridge as bridge

            try:
                return bridge.space_mean(self.group, self.space, self._subsample(h), start).to(h)
            except Exception as exc:  # a failed geomstats fit falls back, and the report says so
                self.failures.append(f"{type(exc).__name__}: {exc}"[:200])
        return _karcher_mean(self.group, h, start)

    def dispersion(self, h: torch.Tensor, mean: torch.Tensor) -> float:
        """Root mean squared distance of ``h`` from ``mean`` (see the class docstring)."""
        if self.space is not None:
            from . import geomstats_bridge as bridge

            try:
                return bridge.space_dispersion(self.group, self.space, self._subsample(h), mean)
            except Exception as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}"[:200])
        logs = self.group.log(self.group.compose(_expand(self.group.inverse(mean[None]), len(h)), h))
        return float(logs.double().pow(2).sum(-1).mean().sqrt())


def best_offset(group, g_pred: torch.Tensor, g_true: torch.Tensor, *, fold: bool = False,
                n_candidates: int = 64, seed: int = 0, mean: PoseMean | None = None) -> torch.Tensor:
    """The constant offset ``h`` (3, 3) that best aligns ``g_pred h`` with ``g_true``.

    Candidates are the members' own offsets ``g_pred^-1 g_true`` (a seeded subsample);
    the one with the smallest median primary error (the group's ``primary_error``) wins
    (robust to misclustered images), then it is refined by the mean of the offsets of the
    images it already fits (error at most the median), kept only if the median error does
    not grow. With ``fold`` (groups that rotate) the rotation error is taken modulo a half
    turn, and offsets half a turn away are folded in before averaging.

    :param group: the model's :class:`~mcvae_framework.interfaces.LieGroup`.
    :param g_pred: predicted poses ``(N, 3, 3)`` of one cluster's images.
    :param g_true: true poses ``(N, 3, 3)``.
    :param mean: how to average (:class:`PoseMean`); default: the hand-written intrinsic
        mean.
    """
    mean = mean or PoseMean(group, "intrinsic")
    n = len(g_pred)
    h = group.compose(group.inverse(g_pred), g_true)
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(n, generator=gen)[: min(n, n_candidates)]

    def median_error(offset):
        errors = group.distance(group.compose(g_pred, _expand(offset, n)), g_true)
        err = _primary_error(group, errors, fold)
        return err.median(), err

    scores = [median_error(h[i])[0] for i in pick]
    best = h[pick[int(torch.stack(scores).argmin())]]
    best_score, err = median_error(best)
    inliers = h[err <= best_score + 1e-6]
    half = group.half_turn(dtype=h.dtype, device=h.device) if fold and hasattr(group, "half_turn") else None
    rotation = rotation_error_key(group, group.distance(best[None], best[None])) if half is not None else None
    if rotation is not None:
        flipped = group.compose(inliers, _expand(half, len(inliers)))
        near = group.distance(_expand(best, len(inliers)), inliers)[rotation]
        near_flip = group.distance(_expand(best, len(inliers)), flipped)[rotation]
        inliers = torch.where((near_flip < near)[:, None, None], flipped, inliers)
    refined = mean.mean(inliers, best)
    if torch.isfinite(refined).all() and median_error(refined)[0] <= best_score:
        return refined
    return best


def _summary(values: torch.Tensor) -> dict:
    v = values.detach().double().cpu()
    return {"median": float(v.median()), "mean": float(v.mean())}


def _error_summaries(errors: dict[str, torch.Tensor], rotation: str | None = None) -> dict:
    """Median and mean of every error, plus ``<rotation>_mod180`` for a group that rotates."""
    out = {key: _summary(val) for key, val in sorted(errors.items())}
    if rotation is not None and rotation in errors:
        out[f"{rotation}_mod180"] = _summary(mod180(errors[rotation]))
    return out


def per_cluster_offsets(group, g_pred: torch.Tensor, g_true: torch.Tensor, clusters, *,
                        fold: bool = False, mean: PoseMean | None = None) -> dict[int, torch.Tensor]:
    """``{cluster: best offset (3, 3)}`` for every non-empty cluster (see :func:`best_offset`)."""
    clusters = torch.as_tensor(np.asarray(clusters))
    return {
        int(c): best_offset(group, g_pred[clusters == c], g_true[clusters == c], fold=fold, mean=mean)
        for c in torch.unique(clusters)
    }


def apply_offsets(group, g_pred: torch.Tensor, clusters, offsets: dict[int, torch.Tensor]) -> torch.Tensor:
    """``g_pred h_c`` with each image's cluster offset ``h_c``."""
    clusters = np.asarray(clusters)
    stacked = torch.stack([offsets[int(c)] for c in clusters]) if len(clusters) else g_pred
    return group.compose(g_pred, stacked)


def offset_dispersion(group, g_pred: torch.Tensor, g_true: torch.Tensor, clusters,
                      offsets: dict[int, torch.Tensor], mean: PoseMean) -> dict:
    """How far each cluster's own offsets ``g_pred^-1 g_true`` lie from its fitted offset:
    the root mean squared distance (see :meth:`PoseMean.dispersion`), per cluster and
    their median. 0 means the model got every pose of the cluster right up to one offset."""
    clusters_t = torch.as_tensor(np.asarray(clusters))
    per_cluster = {}
    for c, h_c in sorted(offsets.items()):
        member = clusters_t == c
        h = group.compose(group.inverse(g_pred[member]), g_true[member])
        per_cluster[str(c)] = mean.dispersion(h, h_c)
    values = [v for v in per_cluster.values() if math.isfinite(v)]
    return {"per_cluster": per_cluster, "median": float(np.median(values)) if values else float("nan")}


def pose_metrics(group, tau_pred: torch.Tensor, tau_true: torch.Tensor, clusters, *,
                 pose_mean: str = "auto", max_points: int = 256, seed: int = 0) -> dict:
    """Pose errors raw, after the best offset per cluster, and (groups that rotate) after
    the best offset per cluster modulo a half turn.

    :param group: the model's group; ``tau`` are its coordinates.
    :param tau_pred: posterior means ``(N, dim)``.
    :param tau_true: the dataset's true poses ``(N, dim)``.
    :param clusters: cluster ids ``(N,)`` (the offsets are per cluster).
    :param pose_mean: how offsets are averaged: ``auto`` (geomstats where the group names
        a geomstats space, else the hand-written intrinsic mean), ``geomstats`` or
        ``intrinsic`` (see :class:`PoseMean`).
    :param max_points: at most this many offsets per geomstats mean and dispersion.
    :returns: ``{"raw": ..., "per_cluster_offset": ..., "per_cluster_offset_mod180": ...,
        "offsets": {cluster: tau of its offset}, "offset_dispersion": ...,
        "offset_mean": {"path", "method", ...}, "primary_error": key}``; each error block
        maps the group's own error keys to their median and mean.
    """
    mean = PoseMean(group, pose_mean, max_points=max_points, seed=seed)
    with torch.no_grad():
        tau_pred = tau_pred.double()
        tau_true = tau_true.double()
        g_pred, g_true = group.exp(tau_pred), group.exp(tau_true)
        raw = group.distance(g_pred, g_true)
        rotation = rotation_error_key(group, raw)
        offsets = per_cluster_offsets(group, g_pred, g_true, clusters, mean=mean)
        aligned = group.distance(apply_offsets(group, g_pred, clusters, offsets), g_true)
        out = {
            "primary_error": primary_error_key(group, raw),
            "raw": _error_summaries(raw, rotation),
            "per_cluster_offset": _error_summaries(aligned, rotation),
            "offsets": {str(c): group.log(h[None])[0].tolist() for c, h in sorted(offsets.items())},
            "offset_dispersion": offset_dispersion(group, g_pred, g_true, clusters, offsets, mean),
        }
        half_turn = getattr(group, "half_turn", None)
        if rotation is not None and half_turn is not None and half_turn(dtype=torch.float64) is not None:
            folded = per_cluster_offsets(group, g_pred, g_true, clusters, fold=True, mean=mean)
            aligned_f = group.distance(apply_offsets(group, g_pred, clusters, folded), g_true)
            out["per_cluster_offset_mod180"] = {f"{rotation}_mod180": _summary(mod180(aligned_f[rotation]))}
        out["offset_mean"] = mean.description
    out["_offsets"] = offsets  # for the canonical alignment; removed before writing
    return out


# ---------------------------------------------------------------------- canonical


def canonical_metrics(group, decoded: torch.Tensor, true_canonical: torch.Tensor, clusters=None,
                      offsets: dict[int, torch.Tensor] | None = None) -> dict:
    """Mean squared error (per pixel, images in [0, 1]) of decoded canonical images.

    ``mse`` compares them as they are. ``mse_offset_aligned`` first moves each decoded
    image by the inverse of its cluster's pose offset (``h_c^-1 D``, see
    :func:`best_offset`), i.e. into the dataset's canonical frame, since the model picks
    its own canonical orientation per cluster.
    """
    decoded = decoded.float()
    true_canonical = true_canonical.float()
    out = {"mse": float(((decoded - true_canonical) ** 2).mean())}
    if group is not None and offsets and clusters is not None:
        h = torch.stack([offsets[int(c)] for c in np.asarray(clusters)]).to(decoded)
        moved = group.act(decoded, group.inverse(h))
        out["mse_offset_aligned"] = float(((moved - true_canonical) ** 2).mean())
    return out


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
    distribution (``group.sample``, seeded), encoded again, and compared with the
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
            tau = group.sample(len(x), generator=gen).to(device=device, dtype=x.dtype)
            moved_enc = model.encode(group.act(x, group.exp(tau)))
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


def dataset_tensors(dataset, batch_size: int = 512) -> dict[str, torch.Tensor]:
    """Every item of ``dataset`` stacked by key (``image``, ``label``, ``canonical``,
    ``pose``); uses the dataset's ``as_tensors()`` when it offers one."""
    as_tensors = getattr(dataset, "as_tensors", None)
    tensors = as_tensors() if callable(as_tensors) else None
    if tensors is not None:
        return dict(tensors)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    parts: dict[str, list] = {}
    for batch in loader:
        for key, value in batch.items():
            parts.setdefault(key, []).append(torch.as_tensor(value))
    return {k: torch.cat(v) for k, v in parts.items()}


@torch.no_grad()
def model_outputs(model, images: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Predictions on ``images`` (CPU tensors): ``cluster``, ``probabilities``, ``tau``
    (posterior mean, absent without a group), ``canonical``, ``reconstruction`` and the
    invariant posterior means ``z_cluster`` / ``z_style``."""
    model.eval()
    device = _device_of(model)
    parts: dict[str, list] = {}
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device)
        # one pass: the posterior means decoded (forward with sample=False) and the prior's
        # responsibilities at the mean of z_c (the model's cluster_probabilities)
        out = model(x, sample=False)
        probabilities = model.prior.responsibilities(out.encoding.z_cluster.mean)
        row = {
            "cluster": probabilities.argmax(-1),
            "probabilities": probabilities,
            "canonical": out.canonical,
            "reconstruction": out.reconstruction,
            "z_cluster": out.encoding.z_cluster.mean,
        }
        if out.encoding.tau is not None:
            row["tau"] = out.encoding.tau.mean
        if out.encoding.z_style is not None:
            row["z_style"] = out.encoding.z_style.mean
        for key, value in row.items():
            parts.setdefault(key, []).append(value.detach().cpu())
    return {k: torch.cat(v) for k, v in parts.items()}


@torch.no_grad()
def elbo_metrics(model, tensors: dict[str, torch.Tensor], loss_config, *, epoch: int,
                 batch_size: int = 256, seed: int = 0) -> dict:
    """Every ELBO term averaged over the split (weighted by batch size), no gradients."""
    from .losses import elbo_terms

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

    :param model: a trained :class:`~mcvae_framework.model.MCEVAE`.
    :param config: its experiment config (for the loss section).
    :param dataset: an :class:`~mcvae_framework.interfaces.ImageDataset`.
    :returns: the report dict (top-level ``accuracy``, ``nmi``, ``ari`` when labels exist).
    """
    tensors = dataset_tensors(dataset)
    outputs = model_outputs(model, tensors["image"], batch_size)
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
        pose = pose_metrics(group, outputs["tau"], tensors["pose"], clusters, pose_mean=pose_mean, seed=seed)
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
    from .build import build
    from .training import load_trained_model

    run_dir = Path(run_dir)
    config, model = load_trained_model(run_dir, device=device)
    model.eval()
    dataset = build("data", config.data, split=split)
    report = evaluate_model(model, config, dataset, batch_size=batch_size, n_actions=n_actions, seed=seed,
                            pose_mean=pose_mean)
    report = {"run_dir": str(run_dir), **report, "collapse": collapse_summary(report, run_dir)}
    write_report(report, run_dir)
    return report


def collapse_summary(report: dict, run_dir) -> dict:
    """Whether the mixture collapsed: components left empty on the scored split, and the
    components the trainer re-seeded during training (``reseeded_components`` in
    ``metrics.csv``; see ``loss.reseed_below``)."""
    sizes = report.get("clustering", {}).get("cluster_sizes", [])
    reseeded = 0.0
    metrics = Path(run_dir) / "metrics.csv"
    if metrics.is_file():
        with metrics.open(newline="", encoding="utf-8") as handle:
            reseeded = sum(float(row.get("train_reseeded_components") or 0) for row in csv.DictReader(handle))
    return {"empty_components": int(sum(1 for size in sizes if size == 0)),
            "smallest_cluster": int(min(sizes)) if sizes else None,
            "reseeded_during_training": int(reseeded)}


# ----------------------------------------------------------------------- writing


def json_safe(value):
    """JSON-safe: NaN/inf become null, tensors and numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return json_safe(value.tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "-"
    return str(value)


def report_markdown(report: dict) -> str:
    """The report as markdown tables (what ``mcvae evaluate`` prints)."""
    lines = [f"# Evaluation of {report.get('run_dir', 'a model')} ({report.get('split')} split, "
             f"{report.get('n_images')} images)", ""]
    clus = report.get("clustering", {})
    if "accuracy" in report:
        lines += ["## Clustering", "", "| accuracy | NMI | ARI | clusters used |", "| --- | --- | --- | --- |",
                  f"| {_fmt(report['accuracy'])} | {_fmt(report['nmi'])} | {_fmt(report['ari'])} | "
                  f"{clus.get('clusters_used', '-')} of {clus.get('n_clusters', '-')} |", ""]
    if "cluster_sizes" in clus:
        lines += [f"Cluster sizes: {clus['cluster_sizes']}", ""]
    collapse = report.get("collapse") or {}
    if collapse.get("empty_components") or collapse.get("reseeded_during_training"):
        lines += [f"**Mixture collapse:** {collapse.get('empty_components', 0)} empty component(s) on this split; "
                  f"{collapse.get('reseeded_during_training', 0)} component(s) re-seeded during training "
                  "(see train.log). Fewer components, graph guidance (`graph.enabled`) or a higher "
                  "`loss.balance_weight` usually help.", ""]
    if "pose" in report:
        lines += ["## Pose error", "",
                  "Errors of exp(tau) against the true pose (group distance); the learned pose is "
                  "defined up to a constant offset per cluster, removed in the last columns.", "",
                  "| unit | raw median | raw mean | offset removed median | offset removed mean |",
                  "| --- | --- | --- | --- | --- |"]
        raw, aligned = report["pose"]["raw"], report["pose"]["per_cluster_offset"]
        for unit in raw:
            lines.append(f"| {unit} | {_fmt(raw[unit]['median'])} | {_fmt(raw[unit]['mean'])} | "
                         f"{_fmt(aligned[unit]['median'])} | {_fmt(aligned[unit]['mean'])} |")
        for unit, folded in report["pose"].get("per_cluster_offset_mod180", {}).items():
            lines.append(f"| {unit}, offset fitted mod 180 | | | {_fmt(folded['median'])} | "
                         f"{_fmt(folded['mean'])} |")
        lines.append("")
        how = report["pose"].get("offset_mean")
        if how:
            lines.append(f"Offsets averaged by: {how.get('method')} ({how.get('path')} path"
                         + (f"; {how['reason']}" if how.get("reason") else "") + ").")
        spread = report["pose"].get("offset_dispersion")
        if spread:
            lines.append(f"Offset dispersion (root mean squared distance of each cluster's offsets from its "
                         f"fitted offset), median over clusters: {_fmt(spread.get('median'))}.")
        if how or spread:
            lines.append("")
    blocks = [("Canonical reconstruction (MSE per pixel)", "canonical"),
              ("Reconstruction (MSE per pixel)", "reconstruction"),
              ("Invariance under random group actions", "invariance"),
              ("ELBO terms (per image)", "elbo")]
    for title, key in blocks:
        if report.get(key):
            lines += [f"## {title}", "", "| quantity | value |", "| --- | --- |"]
            lines += [f"| {name} | {_fmt(value)} |" for name, value in report[key].items()]
            lines.append("")
    return "\n".join(lines).rstrip()


def write_report(report: dict, run_dir) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``run_dir``."""
    run_dir = Path(run_dir)
    clean = json_safe(report)
    json_path, md_path = run_dir / "report.json", run_dir / "report.md"
    json_path.write_text(json.dumps(clean, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(report_markdown(clean) + "\n", encoding="utf-8")
    return json_path, md_path
