"""Pose and canonical-image metrics of a trained model (the ``pose`` and ``canonical``
blocks of ``report.json``; see :mod:`mcvae_framework.report.evaluation`).

The learned pose is defined only up to a constant offset per cluster, so errors are
reported raw and after removing each cluster's best offset, averaged on the group's
geomstats space where it names one (:class:`PoseMean`), else by a hand-written intrinsic mean.

For a group with a discrete part (a reflection, a finite group's elements) poses are
elements ``element(tau, k)``; a cluster's offset is an element too, in the component most
of its images' own offsets lie in (so "one flip per cluster" is forgiven), and the report
adds how often the component is right (``component_accuracy``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import geomstats_bridge as bridge
from ..errors import ConfigError


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


def _discrete(group) -> bool:
    return int(getattr(group, "n_components", 1) or 1) > 1


def _karcher_mean(group, h: torch.Tensor, start: torch.Tensor, steps: int = 10) -> torch.Tensor:
    """Intrinsic mean of ``h`` (N, 3, 3) by ``m <- m exp(mean log(m^-1 h))`` from ``start``,
    with the group's own (closed-form) ``exp`` and ``log``."""
    m = start
    for _ in range(steps):
        step = group.log(group.compose(_expand(group.inverse(m[None]), len(h)), h)).mean(0, keepdim=True)
        m = group.compose(m[None], group.exp(step))[0]
        if step.numel() == 0 or step.abs().max() < 1e-7:  # a finite group has no tau to average
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
            try:
                return bridge.space_mean(self.group, self.space, self._subsample(h), start).to(h)
            except Exception as exc:  # a failed geomstats fit falls back, and the report says so
                self.failures.append(f"{type(exc).__name__}: {exc}"[:200])
        return _karcher_mean(self.group, h, start)

    def dispersion(self, h: torch.Tensor, mean: torch.Tensor) -> float:
        """Root mean squared distance of ``h`` from ``mean`` (see the class docstring)."""
        if self.space is not None:
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
    turn, and offsets half a turn away are folded in before averaging. For a group with a
    discrete part the offset lies in the component most of the members' offsets lie in
    (candidates and the mean are taken there).

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
    component = None
    if _discrete(group):  # the component most members' own offsets lie in
        components = group.component_of(h)
        component = int(torch.bincount(components, minlength=group.n_components).argmax())
        pick = pick[components[pick] == component]
        if len(pick) == 0:
            pick = torch.nonzero(components == component).squeeze(1)[:n_candidates]

    def median_error(offset):
        errors = group.distance(group.compose(g_pred, _expand(offset, n)), g_true)
        err = _primary_error(group, errors, fold)
        return err.median(), err

    scores = [median_error(h[i])[0] for i in pick]
    best = h[pick[int(torch.stack(scores).argmin())]]
    best_score, err = median_error(best)
    inliers = h[(err <= best_score + 1e-6) & (group.component_of(h) == component if component is not None else True)]
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
        if _discrete(group):  # spread within the offset's component (the rest is component_accuracy)
            h = h[group.component_of(h) == group.component_of(h_c[None])[0]]
            if len(h) == 0:
                per_cluster[str(c)] = float("nan")
                continue
        per_cluster[str(c)] = mean.dispersion(h, h_c)
    values = [v for v in per_cluster.values() if math.isfinite(v)]
    return {"per_cluster": per_cluster, "median": float(np.median(values)) if values else float("nan")}


def pose_metrics(group, tau_pred: torch.Tensor, tau_true: torch.Tensor, clusters, *,
                 pose_mean: str = "auto", max_points: int = 256, seed: int = 0,
                 component_pred=None, component_true=None) -> dict:
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
    :param component_pred: ``(N,)`` predicted components, for a group with a discrete part.
    :param component_true: ``(N,)`` true components (the dataset's ``pose_component``).
    :returns: ``{"raw": ..., "per_cluster_offset": ..., "per_cluster_offset_mod180": ...,
        "offsets": {cluster: tau of its offset}, "offset_dispersion": ...,
        "offset_mean": {"path", "method", ...}, "primary_error": key}``; each error block
        maps the group's own error keys to their median and mean. A group with a discrete
        part adds ``component_accuracy`` (:func:`component_accuracy`) and writes each offset
        as ``{"component": k, "tau": [...]}``.
    """
    mean = PoseMean(group, pose_mean, max_points=max_points, seed=seed)
    with torch.no_grad():
        tau_pred = tau_pred.double()
        tau_true = tau_true.double()
        g_pred = group.element(tau_pred, _long(component_pred))
        g_true = group.element(tau_true, _long(component_true))
        raw = group.distance(g_pred, g_true)
        rotation = rotation_error_key(group, raw)
        offsets = per_cluster_offsets(group, g_pred, g_true, clusters, mean=mean)
        moved = apply_offsets(group, g_pred, clusters, offsets)
        aligned = group.distance(moved, g_true)
        out = {
            "primary_error": primary_error_key(group, raw),
            "raw": _error_summaries(raw, rotation),
            "per_cluster_offset": _error_summaries(aligned, rotation),
            "offsets": {str(c): _offset_coordinates(group, h) for c, h in sorted(offsets.items())},
            "offset_dispersion": offset_dispersion(group, g_pred, g_true, clusters, offsets, mean),
        }
        if _discrete(group):
            out["component_accuracy"] = component_accuracy(group, g_pred, moved, g_true)
        half_turn = getattr(group, "half_turn", None)
        if rotation is not None and half_turn is not None and half_turn(dtype=torch.float64) is not None:
            folded = per_cluster_offsets(group, g_pred, g_true, clusters, fold=True, mean=mean)
            aligned_f = group.distance(apply_offsets(group, g_pred, clusters, folded), g_true)
            out["per_cluster_offset_mod180"] = {f"{rotation}_mod180": _summary(mod180(aligned_f[rotation]))}
        out["offset_mean"] = mean.description
    out["_offsets"] = offsets  # for the canonical alignment; removed before writing
    return out


def _long(component) -> torch.Tensor | None:
    return None if component is None else torch.as_tensor(component).long()


def _offset_coordinates(group, h: torch.Tensor):
    """An offset as the report writes it: ``tau`` (a list), or ``{"component", "tau"}``."""
    component, tau = group.split_element(h[None])
    if not _discrete(group):
        return tau[0].tolist()
    return {"component": int(component[0]), "tau": tau[0].tolist()}


def component_accuracy(group, g_pred: torch.Tensor, aligned: torch.Tensor, g_true: torch.Tensor) -> dict:
    """How often the predicted component is the true one: ``raw``, and after each cluster's
    offset (``per_cluster_offset``: up to one component per cluster, e.g. one flip), under
    the name of the group's discrete part (``discrete_part``, e.g. ``reflection``)."""
    truth = group.component_of(g_true)
    return {"name": str(getattr(group, "discrete_part", "component")),
            "raw": float((group.component_of(g_pred) == truth).double().mean()),
            "per_cluster_offset": float((group.component_of(aligned) == truth).double().mean())}


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


__all__ = [
    "POSE_MEAN_PATHS",
    "PoseMean",
    "apply_offsets",
    "best_offset",
    "canonical_metrics",
    "component_accuracy",
    "mod180",
    "offset_dispersion",
    "per_cluster_offsets",
    "pose_metrics",
    "primary_error_key",
    "rotation_error_key",
]
