"""A model never worse than its graph: label-free checks while a graph-guided model trains,
and the repair when it drifts or collapses.

A model that learns from the invariant graph's labels can still leave them: a mixture prior
can let one component swallow others (on simulated particles a model collapsed to 2 of 5
clusters although its graph had 0.70), or the reconstruction term can pull the clusters
towards style instead of class. Neither needs a label to be seen:

* **agreement** with the graph on its *unanimous* images, those whose neighbours all
  share their graph cluster: where the graph is surest, a healthy model agrees with it
  (after the best one-to-one matching of its clusters to the graph's). The model may
  legitimately move the graph's doubtful images; it should not move these;
* **empty components**: a component that holds no training image, while the graph filled
  every cluster.

After every epoch of ELBO training the model's clusters of the training images are checked.
The healthiest state so far is kept in memory (highest agreement, no empty component). When a
check fails, the model goes back to that state, its prior is fitted again to the graph's
clusters, and training goes on (at most ``max_repairs`` times); if the last epoch still fails,
the kept state is what the run ends with; so does a run whose last epoch agrees on fewer than
:data:`END_BELOW` of the unanimous images while an earlier state agreed more. Every check and
repair goes to ``train.log`` and, through the checkpoint, to ``report.json``.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..graph.spectral import renumbered_as
from ..report.inference import cluster_probabilities  # the trainer's checks call it through this module
from .batching import STREAM_REFINE, derive_seed
from .refinement import distil_labels

log = logging.getLogger("mcvae_framework.train.trainer")

#: a healthy model keeps at least this share of the graph's unanimous images in their cluster
MIN_CORE_AGREEMENT = 0.9
#: a run whose last epoch keeps fewer of the graph's unanimous images in their cluster ends with
#: its state of highest agreement instead. The quickstart ended at 99.6% before it set
#: loss.self_label_target (left as it is), at 99.97% with it; five
#: filled shapes (development) swung between 68.7% and 96.6% over their last epochs and ended
#: at 93.0% (0.90 accuracy against the graph's 1.00)
END_BELOW = 0.99
#: ``loss.self_label_target`` raises the self-labelling weight to at most this many times its value
#: (development digits, mirrored, seed 0: at most 4x, accuracy 0.863, reflection 0.882; at most 8x, 0.862 and
#: 0.872; the graph 0.862; without the target 0.826)
MAX_SELF_LABEL_SCALE = 4


def unanimous(labels: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: images whose every graph neighbour shares their cluster."""
    labels = np.asarray(labels)
    return (labels[np.asarray(neighbours)] == labels[:, None]).all(axis=1)


def matched_agreement(reference: np.ndarray, clusters: np.ndarray, n_clusters: int) -> float:
    """Share of images whose cluster is their reference cluster, after the best one-to-one
    matching of clusters to reference clusters (Hungarian)."""
    if len(reference) == 0:
        return 1.0
    reference = np.asarray(reference)
    return float(np.count_nonzero(renumbered_as(np.asarray(clusters), reference, n_clusters) == reference)
                 / len(reference))


@dataclass
class Check:
    """One epoch's check of the model's clusters against the graph's."""

    epoch: int
    agreement: float  # over every training image
    core_agreement: float  # over the graph's unanimous images
    empty_components: list[int]
    healthy: bool
    action: str = ""  # "", "repaired", "restored" or "reseeded"
    self_label_weight: float | None = None  # the weight from this check on, with loss.self_label_target


class GraphKeeper:
    """Checks a graph-guided model after each epoch and keeps its healthiest state.

    :param graph_labels: ``(N,)`` the graph's clusters of the training images.
    :param neighbours: ``(N, k)`` the graph's neighbours of every training image.
    :param n_components: the mixture's component count.
    """

    def __init__(self, graph_labels, neighbours, n_components: int, *, max_repairs: int = 2,
                 min_core_agreement: float = MIN_CORE_AGREEMENT):
        self.graph_labels = np.asarray(graph_labels)
        self.core = unanimous(self.graph_labels, neighbours)
        self.n_components = n_components
        self.graph_fills = len(np.unique(self.graph_labels)) == n_components
        self.max_repairs = max_repairs
        self.min_core_agreement = min_core_agreement
        self.checks: list[Check] = []
        self.repairs = 0
        self.best: dict | None = None  # {"score": ..., "epoch": ..., "model": state_dict}

    def check(self, epoch: int, clusters: np.ndarray) -> Check:
        clusters = np.asarray(clusters)
        sizes = np.bincount(clusters, minlength=self.n_components)
        empty = [int(c) for c in np.flatnonzero(sizes == 0)] if self.graph_fills else []
        core = matched_agreement(self.graph_labels[self.core], clusters[self.core], self.n_components)
        check = Check(epoch, matched_agreement(self.graph_labels, clusters, self.n_components), core, empty,
                      healthy=not empty and core >= self.min_core_agreement)
        self.checks.append(check)
        return check

    def remember(self, check: Check, model) -> None:
        """Keep ``model``'s state when ``check`` is the healthiest so far."""
        score = (check.healthy, check.core_agreement)
        if self.best is None or score > self.best["score"]:
            self.best = {"score": score, "epoch": check.epoch, "model": copy.deepcopy(model.state_dict())}

    def keep(self, guidance, epoch: int, epochs) -> str:
        """The check after ``epoch`` (0-based) of a run's :class:`~mcvae_framework.train.guidance.ClusterGuidance`,
        from the end of pretraining on: rank 0 checks (:meth:`after_epoch`), every process follows.
        A model that never matched gets its prior re-seeded apart and the graph's clusters taught
        directly (:func:`~mcvae_framework.train.refinement.distil_labels`, ``graph.repair_epochs``
        passes). Returns the action taken ("" when healthy)."""
        if epoch + 1 < epochs.pretrain_epochs:
            return ""
        context, model = guidance.context, guidance.model
        action = ""
        if context.is_main:
            clusters = cluster_probabilities(model, guidance.training_images(), guidance.device).argmax(-1)
            action = self.after_epoch(epoch + 1, clusters.numpy(), model,
                                      last=epoch + 1 == epochs.total_epochs).action
        action = context.all_gather_objects(action)[0]
        if action == "reseeded":
            before = copy.deepcopy(model.state_dict()) if context.is_main else None
            guidance.fit_prior(separate=True)
            if context.is_main:
                config = guidance.config
                generator = torch.Generator().manual_seed(derive_seed(config.training.seed, STREAM_REFINE, epoch))
                agreement = distil_labels(model, guidance.training_images(), guidance.loss_module.guide.labels.cpu(),
                                          epochs=config.graph.repair_epochs, batch_size=config.training.batch_size,
                                          lr=config.training.lr, generator=generator, device=guidance.device)
                log.info("epoch %d: the graph's clusters taught directly for %d passes: the model now agrees on "
                         "%.1f%% of the training images", epoch + 1, config.graph.repair_epochs, 100 * agreement)
                self.undo_if_worse(model, before, agreement)
        if action:
            context.broadcast_module_state(model)
        self.follow_self_label_target(guidance, epoch + 1)
        return action

    def follow_self_label_target(self, guidance, epoch: int) -> None:
        """``loss.self_label_target``: after the check of ``epoch`` (1-based) the self-labelling term trains on
        with its weight doubled when the model kept fewer of the unanimous images in their cluster than the
        target (:meth:`self_label_scale`; rank 0 checks, every process follows). A model that learns its
        graph's clusters slowly (mirrored handwriting agreed with its graph on 91% of the training images by
        the last of 20 epochs, and clustered 0.03 below it) learns them within the run instead."""
        loss, context = guidance.config.loss, guidance.context
        if loss.self_label_target is None:
            return
        scale = context.all_gather_objects(self.self_label_scale(loss.self_label_target) if context.is_main
                                           else None)[0]
        weight = scale_self_label(guidance.loss_module, loss, scale)
        if context.is_main:
            check = self.checks[-1]
            check.self_label_weight = weight
            if check.core_agreement < loss.self_label_target:
                before = self.checks[-2].self_label_weight if len(self.checks) > 1 else None
                log.info("epoch %d: under loss.self_label_target (%.1f%% of the unanimous images): the "
                         "self-labelling weight %s %g (%d times loss.self_label_weight)", epoch,
                         100 * loss.self_label_target, "stays at" if before == weight else "is now", weight, scale)

    def undo_if_worse(self, model, before: dict, agreement: float) -> bool:
        """Put ``model``'s state from ``before`` a re-seeding back when the repair left it
        agreeing with the graph on fewer training images (``agreement``) than it did before:
        a model still learning the graph's clusters (agreeing on 70-85% at the end of
        pretraining on noisy particles) is set back by a prior moved under it, one that
        collapsed is not. Returns whether it was undone."""
        check = self.checks[-1]
        if agreement >= check.agreement:
            return False
        model.load_state_dict(before)
        check.action = "reseeded, undone"
        log.info("epoch %d: the repair is undone (the model agreed on %.1f%% before it, %.1f%% after): training "
                 "goes on from the state before it", check.epoch, 100 * check.agreement, 100 * agreement)
        return True

    def after_epoch(self, epoch: int, clusters: np.ndarray, model, *, last: bool) -> Check:
        """Check ``model``'s ``clusters`` after ``epoch`` (1-based), keep its state when it is the
        healthiest so far, and when the check fails put the healthiest state back into
        ``model`` (``repaired``, at most ``max_repairs`` times; on the last epoch ``restored``)."""
        check = self.check(epoch, clusters)
        self.remember(check, model)
        healthy_before = self.best is not None and self.best["score"][0]
        short = last and check.core_agreement < END_BELOW and self.best["epoch"] != epoch  # a better state exists
        if (not check.healthy and healthy_before and (last or self.repairs < self.max_repairs)) or short:
            check.action = "restored" if last else "repaired"
            self.repairs += not last
            model.load_state_dict(self.best["model"])
        elif not check.healthy and not last and self.repairs < self.max_repairs:
            # never healthy yet: the latents do not separate the graph's clusters, and a prior fitted
            # to them has components too alike to teach anything; the caller re-seeds it apart
            check.action = "reseeded"
            self.repairs += 1
        log_line = log.warning if not check.healthy else log.info
        what = {"repaired": f"; repaired: back to its state after epoch {self.best['epoch']}",
                "restored": f"; restored: the run ends with its state after epoch {self.best['epoch']}",
                "reseeded": "; reseeded: the prior's components placed apart, one per graph cluster"}
        log_line("epoch %d: the model %s%s", epoch, describe(check), what.get(check.action, ""))
        return check

    def self_label_scale(self, target: float) -> int:
        """The factor on the self-labelling weight under ``loss.self_label_target``: doubled for every
        check so far that found the model keeping fewer than ``target`` of the unanimous images in their
        cluster, at most :data:`MAX_SELF_LABEL_SCALE`. Read from the checks alone, so that a resumed run
        (whose checks come back from its checkpoint) trains on with the same weight."""
        return min(2 ** sum(check.core_agreement < target for check in self.checks), MAX_SELF_LABEL_SCALE)

    def summary(self) -> dict:
        """What ``report.json`` shows: every check and what was done."""
        return {"min_core_agreement": self.min_core_agreement, "unanimous_images": int(self.core.sum()),
                "repairs": self.repairs, "restored_epoch": next(
                    (c.epoch for c in reversed(self.checks) if c.action == "restored"), None),
                "checks": [asdict(c) for c in self.checks]}

    def state_dict(self) -> dict:
        return {"checks": [asdict(c) for c in self.checks], "repairs": self.repairs,
                "best": {"score": list(self.best["score"]), "epoch": self.best["epoch"], "model": self.best["model"]}
                if self.best is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.checks = [Check(**c) for c in state["checks"]]
        self.repairs = state["repairs"]
        best = state["best"]
        self.best = None if best is None else {"score": tuple(best["score"]), "epoch": best["epoch"],
                                               "model": best["model"]}


def separated_latents(latents: torch.Tensor, labels: torch.Tensor, n_components: int, seed: int) -> torch.Tensor:
    """``latents`` each moved towards its cluster's own anchor, so that a prior fitted to them
    has one clearly separate component per cluster: anchors ``3 s e_k`` along orthonormal
    directions ``e_k`` (random unit directions when there are more clusters than latent
    dimensions), ``s`` the latents' spread. The self-labelling term then has a gradient that
    pulls every image's ``z_c`` to its cluster's component; with alike components it has none."""
    generator = torch.Generator().manual_seed(seed)
    dim = latents.shape[1]
    directions = torch.randn(max(n_components, dim), dim, generator=generator, dtype=torch.float64)
    if n_components <= dim:
        directions = torch.linalg.qr(directions.T)[0].T
    directions = torch.nn.functional.normalize(directions[:n_components], dim=1).to(latents.dtype)
    return latents + 3 * latents.std() * directions[labels]


def scale_self_label(loss_module, loss_config, scale: int) -> float:
    """``loss_module`` trains on with ``scale`` times ``loss_config``'s self-labelling weight (a copy of
    the section: the run's config keeps the value it was given); returns the weight."""
    weight = loss_config.self_label_weight * scale
    if weight != loss_module.loss_config.self_label_weight:
        loss_module.loss_config = loss_config.model_copy(update={"self_label_weight": weight})
    return weight


def percent(share: float) -> str:
    """``share`` in percent to one decimal, or to as many as it takes not to round a shortfall up to
    100% (one image in 3,200 elsewhere reads 99.97%, not 100.0%)."""
    for decimals in range(1, 4):
        text = f"{100 * share:.{decimals}f}"
        if share >= 1 or float(text) < 100:
            return text + "%"
    return f"{100 * share:.4f}%"


def describe(check: Check) -> str:
    empty = f", empty components {check.empty_components}" if check.empty_components else ""
    return (f"agrees with the graph on {percent(check.core_agreement)} of its unanimous images "
            f"({percent(check.agreement)} of all){empty}")


__all__ = ["Check", "END_BELOW", "GraphKeeper", "cluster_probabilities", "MAX_SELF_LABEL_SCALE", "MIN_CORE_AGREEMENT",
           "matched_agreement", "percent", "scale_self_label", "separated_latents", "unanimous"]
