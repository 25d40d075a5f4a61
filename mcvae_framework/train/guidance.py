"""How training steers the mixture prior towards clusters: the prior's warm start after
pretraining, the invariant graph and its refined labels (``graph``), self-labelling
(``graph.relabel_every``) and the re-seeding of collapsed components (``loss.reseed_below``).

:class:`ClusterGuidance` holds what these share: the invariant graph of the training
images and the :class:`~mcvae_framework.model.guide.Guide` the graph-guided loss terms read
(``loss_module.guide``). Rank 0
computes; every process receives the result, so a DDP run stays in step.
"""

from __future__ import annotations

import logging

import torch
from sklearn.cluster import KMeans

from .batching import STREAM_EVAL, STREAM_REFINE, derive_seed, sample_indices
from ..runtime.data import dataset_tensors
from ..errors import TrainingError
from ..graph.invariant_graph import GraphClusters, central_members
from ..model.guide import Guide
from .graph_build import build_invariant_graph
from .graph_check import GraphKeeper, cluster_probabilities, scale_self_label, separated_latents
from .pose_warmup import warm_up_on_graph
from .refinement import refine_labels

log = logging.getLogger("mcvae_framework.train.trainer")


class ClusterGuidance:
    """The cluster guidance of one training run.

    :param config: the experiment config.
    :param context: the run's :class:`~mcvae_framework.runtime.distributed.DistributedContext`.
    :param device: the training device.
    :param model: the :class:`~mcvae_framework.model.mcevae.MCEVAE` being trained.
    :param loss_module: its :class:`~mcvae_framework.model.losses.LossModule` (``guide`` is set here).
    :param train_data: the training dataset.
    :param train_batches: its batch source (unshuffled, it encodes the whole set).
    :param optimizer: the run's optimiser (the prior's warm start must keep its parameters).
    """

    def __init__(self, config, context, device, model, loss_module, train_data, train_batches, optimizer):
        self.config = config
        self.context = context
        self.device = device
        self.model = model
        self.loss_module = loss_module
        self.train_data = train_data
        self.train_batches = train_batches
        self.optimizer = optimizer
        #: the invariant graph of the training images (graph.enabled), a GraphClusters.
        self.graph: GraphClusters | None = None
        self._images: torch.Tensor | None = None
        #: the label-free checks that keep the model at or above its graph (graph.enabled)
        self.keeper: GraphKeeper | None = None

    def training_images(self, indices: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, C, H, W)`` training images (all, or those at ``indices``) on the CPU. All of
        them are stacked once and kept: the graph, the refinement and every relabelling read
        them again, and a streamed dataset would otherwise be read from disk each time."""
        if self._images is None and indices is not None:
            return dataset_tensors(self.train_data, keys=("image",), indices=indices)["image"].cpu()
        if self._images is None:
            self._images = dataset_tensors(self.train_data, keys=("image",))["image"].cpu()
        return self._images if indices is None else self._images[indices]

    # ------------------------------------------------------------------ the prior's warm start

    def fit_prior(self, separate: bool = False) -> None:
        """After pretraining: fit the mixture prior to the encoded ``z_c`` means of the whole
        training set (on rank 0, then copied to every process); ``separate``: with the graph's
        clusters pulled apart first (:func:`~mcvae_framework.train.graph_check.separated_latents`)."""
        if self.context.is_main:
            encode_all = self.train_batches.with_options(
                shuffle=False, drop_last=False, rank=0, world_size=1, batch_size=self.config.training.eval_batch_size)
            self.model.eval()
            with torch.no_grad():
                posteriors = [self.model.encode(batch["image"]).z_cluster for batch in encode_all(0)]
            latents = torch.cat([posterior.mean for posterior in posteriors])
            if self.graph is not None:
                # One draw of every posterior: each component then matches its cluster's share of
                # the aggregate posterior, posterior spread included (fitted to the means alone, a
                # component can be far narrower than the posteriors it must hold, and the mixture
                # KL starts huge).
                noise = torch.Generator().manual_seed(derive_seed(self.config.training.seed, STREAM_EVAL))
                draws = torch.cat([p.sample(noise) for p in posteriors])
                if separate:
                    draws = separated_latents(draws, self.loss_module.guide.labels.cpu(), self.model.prior.n_components,
                                              derive_seed(self.config.training.seed, STREAM_EVAL))
            if self.graph is not None and self._init_from_assignments(draws, self.loss_module.guide.labels.cpu()):
                log.info("fitted the %s prior to %d encoded training images, one component per invariant-graph "
                         "cluster", self.config.prior.type, len(latents))
            else:
                self.model.fit_prior(latents)
                log.info("fitted the %s prior to %d encoded training images", self.config.prior.type, len(latents))
            self.model.train()
        self.context.broadcast_module_state(self.model.prior)
        in_optimizer = {id(p) for group in self.optimizer.param_groups for p in group["params"]}
        if any(id(p) not in in_optimizer for p in self.model.parameters()):
            raise TrainingError(
                f"the {self.config.prior.type!r} prior replaced its parameter tensors in init_from; it must copy "
                "into the existing ones (param.copy_(...)) so the optimiser keeps training them"
            )

    def _init_from_assignments(self, latents: torch.Tensor, assignments: torch.Tensor) -> bool:
        """``prior.init_from_assignments``; False (logged) when the prior does not offer it."""
        try:
            self.model.prior.init_from_assignments(latents, assignments)
        except NotImplementedError:
            log.warning("the %r prior has no init_from_assignments: it is fitted without the given clusters",
                        self.config.prior.type)
            return False
        return True

    # ------------------------------------------------------------------ the invariant graph

    def start_graph(self, fresh: bool) -> None:
        """The invariant graph, and on a ``fresh`` run (not a resumed one, whose encoder has them)
        the encoder's warm-ups on it: ``graph.refine_epochs``, then ``graph.pose_warmup_steps``."""
        self.build_graph()
        if fresh and self.config.graph.refine_epochs:
            self.refine_labels()
        if fresh and self.config.graph.pose_warmup_steps:
            self.warm_up_pose()

    def build_graph(self) -> None:
        """The invariant graph of the training images (rank 0 computes, every process gets it;
        :func:`~mcvae_framework.train.graph_build.build_invariant_graph`, as ``mcvae graph``)."""
        images = self.training_images() if self.context.is_main else None
        graph = build_invariant_graph(self.config, images, self.model.group, self.model.prior.n_components,
                                      context=self.context, progress=self.config.training.progress)
        self.use_graph(graph)

    def refine_labels(self) -> None:
        """``graph.refine_epochs``: warm the encoder up on the graph's labels and neighbours
        (:mod:`mcvae_framework.train.refinement`, on rank 0); its labels of every training image
        then replace the graph's, every image trusted."""
        cfg = self.config.graph
        refined = None
        if self.context.is_main:
            log.info("refining the graph's labels: %d passes over its %d confident images", cfg.refine_epochs,
                     int(self.graph.confident.sum()))
            generator = torch.Generator().manual_seed(derive_seed(self.config.training.seed, STREAM_REFINE))
            refined = refine_labels(
                self.model, self.training_images(), self.graph.labels, self.graph.confident,
                self.graph.neighbours, epochs=cfg.refine_epochs, batch_size=self.config.training.batch_size,
                lr=cfg.refine_lr, neighbour_weight=cfg.refine_neighbour_weight,
                balance_weight=cfg.refine_balance_weight, smoothing=cfg.refine_smoothing, generator=generator,
                device=self.device, progress=self.config.training.progress)
            log.info("refined labels: %.1f%% differ from the graph's, clusters of sizes %s, %.1f s",
                     100 * refined.changed, torch.bincount(refined.labels, minlength=self.model.prior.n_components)
                     .tolist(), refined.seconds)
        refined = self.context.all_gather_objects(refined)[0]
        self.context.broadcast_module_state(self.model.encoder)
        self.set_guide(refined.labels, torch.ones_like(refined.labels, dtype=torch.bool))

    def warm_up_pose(self) -> None:
        """``graph.pose_warmup_steps``: the encoder and the pose head learn the graph's synchronised
        poses before the VAE trains (:func:`~mcvae_framework.train.pose_warmup.warm_up_on_graph`, on
        rank 0); every process then gets them."""
        self._needs_rotations(self.graph, "graph.pose_warmup_steps", "teaches the pose head the invariant "
                              "graph's synchronised poses")
        if self.context.is_main:
            warm_up_on_graph(self.model, self.graph, self.training_images(), self.config, self.device)
        self.context.broadcast_module_state(self.model.encoder)
        self.context.broadcast_module_state(self.model.pose_head)

    def _needs_rotations(self, graph: GraphClusters, setting: str, purpose: str) -> None:
        """Refuse ``setting`` (> 0, which ``purpose``) when the graph synchronised no rotation."""
        if graph.angles is None and graph.poses is None:
            raise TrainingError(
                f"{setting} > 0 {purpose}, but the group {self.config.group.type!r} has no rotation angle to "
                f"synchronise (its angle_coordinates are empty, and it has no orthogonal part): set {setting}: 0")

    def _guide_reads(self) -> set[str]:
        """The guide fields that the switched-on graph-guided terms read."""
        return {name for term in self.config.loss.guided_terms() for name in term.reads}

    def use_graph(self, graph: GraphClusters) -> None:
        if "angles" in self._guide_reads():
            self._needs_rotations(graph, "loss.pose_guide_weight", "learns the pose from the invariant graph's "
                                  "synchronised angles")
        self.graph = graph
        self.keeper = GraphKeeper(graph.labels.numpy(), graph.neighbours.numpy(), self.model.prior.n_components)
        self.set_guide(graph.labels, graph.confident)

    def set_guide(self, labels: torch.Tensor, confident: torch.Tensor) -> None:
        """The labels the self-labelling term learns and which of them it trusts, and whatever
        else of the graph the switched-on guided terms read: the synchronised angles, or the
        graph's neighbours and the training images (read from memory)."""
        guide = Guide(labels=labels, confident=confident)
        reads = self._guide_reads()
        if "angles" in reads:
            # the angles' frames belong to the graph's clusters, whatever labels the guide holds later
            # synchronised orthogonal poses instead of angles: a discrete part, or rotations of volumes
            guide.angles, guide.poses, guide.angle_clusters = self.graph.angles, self.graph.poses, self.graph.labels
        if "neighbours" in reads:
            tensors = getattr(self.train_batches, "tensors", None)
            if tensors is None:
                log.warning("loss.neighbour_weight is ignored: the training set is not held in memory")
            else:
                guide.neighbours, guide.images = self.graph.neighbours, tensors["image"]
        self.loss_module.guide = guide.to(self.device)

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        """The graph and the labels self-labelling has reached, for a checkpoint."""
        guide = self.loss_module.guide
        return {"graph": self.graph.state_dict() if self.graph is not None else None,
                "guide": {"labels": guide.labels.cpu(), "confident": guide.confident.cpu()} if guide else None,
                "graph_check": self.keeper.state_dict() if self.keeper is not None else None}

    def load_state_dict(self, checkpoint: dict) -> None:
        """Take the graph and the guide back from a checkpoint (when the run uses the graph)."""
        if checkpoint.get("graph") is not None and self.config.graph.enabled:
            self.use_graph(GraphClusters.from_state_dict(checkpoint["graph"]))
            if checkpoint.get("guide") is not None:  # the labels self-labelling had reached
                self.set_guide(checkpoint["guide"]["labels"], checkpoint["guide"]["confident"])
            if checkpoint.get("graph_check") is not None:
                self.keeper.load_state_dict(checkpoint["graph_check"])
                if self.config.loss.self_label_target is not None:  # the weight the run had reached
                    scale_self_label(self.loss_module, self.config.loss,
                                     self.keeper.self_label_scale(self.config.loss.self_label_target))

    # ------------------------------------------------------------------ during training

    def reseed_small_components(self, epoch: int) -> int:
        """Re-seed every component that holds fewer than ``loss.reseed_below`` of its fair share
        of (a fixed sample of) the training images, by splitting the largest cluster in two
        (2-means of its latents); returns how many were re-seeded (the same on every process)."""
        count = 0
        if self.context.is_main:
            latents, pick = self.sample_latents()
            k = self.model.prior.n_components
            with torch.no_grad():
                clusters = self.model.prior.responsibilities(latents).argmax(-1).cpu()
            count = split_largest_for_small(clusters, latents, self.config.loss.reseed_below * len(clusters) / k,
                                            k, epoch)
            if count and self.loss_module.guide is not None:
                # Guided training: the components go back to the clusters the self-labelling
                # term teaches, rather than to an arbitrary split.
                clusters = self.loss_module.guide.labels.cpu()[pick]
                log.warning("epoch %d: re-seeded from the self-labelling term's clusters instead", epoch + 1)
            if count and not self._init_from_assignments(latents.cpu(), clusters):
                count = 0
        self.context.broadcast_module_state(self.model.prior)
        return int(self.context.all_gather_objects(count)[0])

    def relabels(self, epoch: int) -> bool:
        """Whether self-labelling replaces the guide after ``epoch`` (``graph.relabel_every``)."""
        every = self.config.graph.relabel_every
        done = epoch + 1 - self.config.loss.pretrain_epochs
        return bool(self.graph is not None and every and done > 0 and done % every == 0)

    def relabel(self, epoch: int) -> float:
        """Self-labelling: the model's clusters of the training images become the labels the
        self-labelling term learns from; returns the share of images whose label changed."""
        guide = None
        if self.context.is_main:
            confidence, labels = cluster_probabilities(self.model, self.training_images(), self.device).max(-1)
            confident = central_members(labels.numpy(), -confidence.numpy(), self.config.graph.confident_fraction)
            guide = Guide(labels=labels, confident=torch.as_tensor(confident))
        guide = self.context.all_gather_objects(guide)[0]
        changed = float((guide.labels != self.loss_module.guide.labels.cpu()).double().mean())
        self.set_guide(guide.labels, guide.confident)
        log.info("epoch %d: self-labelling from the model's clusters (%.1f%% of the labels changed)",
                 epoch + 1, 100 * changed)
        return changed

    # ------------------------------------------------------------------ a model never worse than its graph

    def keep_graph(self, epoch: int, epochs) -> str:
        """After ``epoch`` (0-based): the model checked against its graph, repaired when it drifted or
        never matched (:meth:`~mcvae_framework.train.graph_check.GraphKeeper.keep`); the action taken."""
        return self.keeper.keep(self, epoch, epochs) if self.keeper is not None else ""

    def sample_latents(self, size: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
        """One posterior draw of ``z_c`` for each of a fixed, seeded sample of the training
        images (draws, not means, so that a component fitted to them is as wide as the
        posteriors it holds), and the sample's indices."""
        generator = torch.Generator().manual_seed(derive_seed(self.config.training.seed, STREAM_EVAL))
        pick = sample_indices(len(self.train_data), size, generator)
        return cluster_latent_draws(self.model, self.training_images(pick), self.device, generator), pick


def split_largest_for_small(clusters: torch.Tensor, latents: torch.Tensor, floor: float, k: int, epoch: int) -> int:
    """Every component holding fewer than ``floor`` of ``clusters`` (changed in place) takes one
    half of the then largest cluster (2-means of its ``latents``); returns how many did."""
    count = 0
    for component in range(k):
        sizes = torch.bincount(clusters, minlength=k)
        if sizes[component] >= floor or len(clusters) < 2 * k:
            continue
        largest = int(sizes.argmax())
        members = torch.nonzero(clusters == largest).squeeze(1)
        halves = KMeans(n_clusters=2, n_init=3, random_state=epoch).fit_predict(
            latents[members].detach().cpu().double().numpy())
        clusters[members[torch.as_tensor(halves) == 1]] = component
        log.warning("epoch %d: component %d held %d of %d sampled training images (fewer than %.0f); "
                    "re-seeded by splitting component %d", epoch + 1, component, int(sizes[component]),
                    len(clusters), floor, largest)
        count += 1
    return count


def cluster_latent_draws(model, images: torch.Tensor, device, generator: torch.Generator) -> torch.Tensor:
    """One draw of ``q(z_c | x)`` for each of ``images``, in eval mode."""
    model.eval()
    try:
        with torch.no_grad():
            return torch.cat([model.encode(images[i:i + 512].to(device)).z_cluster.sample(generator)
                              for i in range(0, len(images), 512)])
    finally:
        model.train()


__all__ = ["ClusterGuidance"]
