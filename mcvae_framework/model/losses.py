"""The modified ELBO of MCE-VAE, every term reported separately.

All terms are per-image means over the batch (the reconstruction is summed over pixels),
so ``loss`` is the negative ELBO per image plus the weighted invariance penalties::

    loss = reconstruction + pose_weight * pose_kl + beta * style_kl
         + cluster_weight * cluster_kl
         + invariance_weight * (invariance + canonical_invariance)      (unsupervised)
         + pose_consistency_weight * pose_consistency                   (unsupervised)
         + supervised_weight * canonical                                (supervised)
         + self_label_weight * self_label                   (graph-guided, see below)
         + neighbour_weight * neighbour + balance_weight * balance
         + pose_guide_weight * pose_guide                   (graph-guided, see below)

``self_label`` is the cross-entropy between the prior's responsibilities
``q(c|x) = p(c | mu_c(x))`` and the invariant graph's cluster of ``x``, over the graph's
confident images in the batch; ``balance`` is ``KL(mean_x q(c|x) || uniform)``;
``pose_guide`` is ``1 - cos(theta(x) - a(x) - o_c)`` between the pose head's angle and the
graph's synchronised angle, up to one offset per graph cluster.

``beta`` and the invariance weights ramp up over ``warmup_epochs``.

:class:`LossModule` makes "the model plus this loss" one module: DistributedDataParallel
only synchronises gradients of work done inside *its* forward, and the loss calls model
methods (``encode``, ``decode``) rather than ``model.forward``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .guide import Guide
from .likelihood import reconstruction_nll
from .mcevae import MCEVAE, Encoding, Posterior
from .pose_terms import (component_consistency, enumerated_pose_terms, every_component_consistency,
                         orthogonal_guidance, random_elements)



def ramp(epoch: int, warmup_epochs: int) -> float:
    """Linear warm-up factor: ``1/(W+1), 2/(W+1), ..., 1`` over the first ``W`` epochs."""
    if warmup_epochs <= 0:
        return 1.0
    return min(1.0, (epoch + 1) / (warmup_epochs + 1))


def _invariant_means(enc: Encoding) -> torch.Tensor:
    parts = [enc.z_cluster.mean] + ([enc.z_style.mean] if enc.z_style is not None else [])
    return torch.cat(parts, dim=-1)


def invariance_terms(model: MCEVAE, x: torch.Tensor, enc: Encoding, canonical: torch.Tensor,
                     n_augment: int, generator: torch.Generator | None = None,
                     copy_gradients: bool = False) -> dict[str, torch.Tensor]:
    """Penalties comparing ``x`` with ``n_augment`` randomly moved copies ``h . x``.

    All copies go through the encoder in **one batched pass**. Unless ``copy_gradients``,
    that pass runs without gradients: the copies are fixed targets that the original's
    latents and pose are pulled to (the same fixed point, at a third of the cost).

    * ``invariance``: squared change of the invariant posterior means (``z_c``, ``z_v``)
      from the original to its copies, per latent dimension and relative to that
      dimension's variance over the batch (0: invariant; about 2: unrelated);
    * ``canonical_invariance``: mean squared difference per pixel between the canonical
      decoding of the original and those of its copies;
    * ``pose_consistency``: ``|log(exp(tau(x))^-1 h^-1 exp(tau(h.x)))|^2`` -- a copy's pose
      is the move composed with the original's pose. For a group with a discrete part the
      moves include its components, every component's ``tau`` is held to the same rule
      (:func:`~mcvae_framework.model.pose_terms.every_component_consistency`), and the
      cross-entropy of ``q(k|x)`` with the component each copy implies for ``x`` is added.
    """
    group = model.group
    n = x.shape[0]
    h = random_elements(group, n * n_augment, generator, x)
    with torch.set_grad_enabled(copy_gradients and torch.is_grad_enabled()):
        copies = group.act(x.repeat_interleave(n_augment, dim=0), h)
        enc_copies = model.encode(copies)
        style = enc_copies.z_style.mean if enc_copies.z_style is not None else None
        canonical_copies = model.decode(enc_copies.z_cluster.mean, style)
        # The pose of x that each copy implies: h^-1 element(tau(h.x), k(h.x)).
        implied_pose = group.compose(group.inverse(h), model.pose_element(enc_copies.tau.mean, enc_copies.component))

    def per_image(values: torch.Tensor) -> torch.Tensor:
        return values.view(n, n_augment).mean(-1).mean()

    means = _invariant_means(enc)
    # Relative change: squared differences over the latents' own spread in the batch, so
    # that shrinking every latent towards a constant does not lower the penalty.
    spread = means.detach().var(dim=0, unbiased=False).clamp_min(1e-6)
    change = _invariant_means(enc_copies) - means.repeat_interleave(n_augment, dim=0)
    invariance = (change.pow(2) / spread).mean(-1)
    canonical_x = canonical.repeat_interleave(n_augment, dim=0)
    canonical_invariance = (canonical_copies - canonical_x).pow(2).flatten(1).mean(-1)
    if enc.component is None:
        pose_x = model.pose_element(enc.tau.mean, enc.component).repeat_interleave(n_augment, dim=0)
        consistency = group.log(group.compose(group.inverse(pose_x), implied_pose)).pow(2).sum(-1)
    else:  # every component's tau follows the moves; the component itself is taught by the copies
        consistency = every_component_consistency(model, enc, enc_copies, h, n_augment) + \
            component_consistency(enc, group.component_of(implied_pose.detach()), n_augment)
    return {
        "invariance": per_image(invariance),
        "canonical_invariance": per_image(canonical_invariance),
        "pose_consistency": per_image(consistency),
    }


class _ComponentLogDensity(nn.Module):
    """``prior.log_prob_per_component`` as a module's forward, so that
    :func:`torch.func.functional_call` can run it with detached parameters."""

    def __init__(self, prior):
        super().__init__()
        self.prior = prior

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.prior.log_prob_per_component(z)


def fixed_prior_log_q(prior, z: torch.Tensor) -> torch.Tensor:
    """``log q(c | z)`` through the prior with its parameters held fixed: the gradient
    reaches ``z`` (the encoder) only. Letting a cross-entropy train the prior too lets it
    sharpen the components instead of moving the latents (the mixture KL then explodes)."""
    module = _ComponentLogDensity(prior)
    fixed = {name: value.detach() for name, value in module.named_parameters()}
    return torch.log_softmax(torch.func.functional_call(module, fixed, (z,), strict=False), dim=-1)


def neighbour_disagreement(log_q: torch.Tensor, log_q_partner: torch.Tensor) -> torch.Tensor:
    """``-log sum_k q(k|x) q(k|x_n)`` averaged over the batch, from ``(N, K)`` log-probabilities
    of images and of one neighbour each: 0 when both are sure of the same cluster."""
    return -torch.logsumexp(log_q + log_q_partner, dim=-1).mean()


def balance_kl(log_q: torch.Tensor) -> torch.Tensor:
    """``KL(mean_x q(.|x) || uniform)`` from ``(N, K)`` log-probabilities: 0 when every cluster
    is used equally, ``log K`` when one takes every image."""
    mean_q = log_q.exp().mean(0)
    return (mean_q * (torch.log(mean_q.clamp_min(1e-12)) + math.log(mean_q.shape[0]))).sum()


def pose_guidance(theta: torch.Tensor, target: torch.Tensor, clusters: torch.Tensor, weight: torch.Tensor,
                  n_clusters: int) -> torch.Tensor:
    """``sum_x w(x) (1 - cos(theta(x) - a(x) - o_c(x))) / sum_x w(x)``: the angles ``theta``
    agree with the targets ``a`` up to one offset per cluster.

    Synchronised angles are defined up to one rotation per graph cluster, and the model's
    canonical frame per cluster is its own, so only differences within a cluster are asked
    for: ``o_c`` is the (weighted) circular mean of ``theta - a`` over the batch's images of
    cluster ``c``, held fixed (no gradient), so the term moves each angle towards its
    cluster's consensus frame rather than the consensus towards the outliers.
    """
    difference = theta - target
    with torch.no_grad():
        sin = torch.zeros(n_clusters, dtype=theta.dtype, device=theta.device).index_add_(
            0, clusters, weight * torch.sin(difference))
        cos = torch.zeros_like(sin).index_add_(0, clusters, weight * torch.cos(difference))
        offset = torch.atan2(sin, cos)[clusters]
    return (weight * (1 - torch.cos(difference - offset))).sum() / weight.sum().clamp_min(1.0)


def pose_guide_term(model: MCEVAE, enc: Encoding, guide: Guide, index: torch.Tensor,
                    component_weight: float = 1.0) -> torch.Tensor:
    """The ``pose_guide`` term of the images at ``index`` (their encoding ``enc``): :func:`pose_guidance`
    of the pose head's first angle against the graph's synchronised ``angles``, or, with the graph's
    synchronised orthogonal ``poses`` instead (a discrete part, rotations of volumes),
    :func:`~mcvae_framework.model.pose_terms.orthogonal_guidance`."""
    weight = guide.confident[index].to(enc.tau.mean.dtype)
    if guide.angles is not None:
        angle = model.group.angle_coordinates[0]
        return pose_guidance(enc.tau.mean[:, angle], guide.angles[index], guide.angle_clusters[index], weight,
                             model.prior.n_components)
    return orthogonal_guidance(model, enc, guide.poses[index], guide.angle_clusters[index], weight,
                               model.prior.n_components, component_weight=component_weight)


def guidance_terms(model: MCEVAE, batch: dict, enc: Encoding, loss_config, guide: Guide | None,
                   generator: torch.Generator | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor | float]:
    """The cluster-guidance terms on the prior's responsibilities ``q(c|x)``.

    Both act on the encoder only (the prior's parameters are held fixed here; the mixture
    KL fits the prior). A graph-guided term (``loss_config.guided_terms()``) runs when the
    batch carries each image's ``index`` and ``guide`` holds what the term reads:

    * ``self_label`` (the graph's ``labels`` and ``confident`` mask for the training set):
      ``-log q(c = label(x) | x)`` averaged over the batch's confident images (with
      ``self_label_copies``, the mean of that and the same cross-entropy on moved copies
      ``h . x``, encoded with gradients: the label holds at every pose);
    * ``neighbour`` (the graph's ``neighbours`` and the training ``images``):
      ``-log sum_k q(k|x) q(k|x_n)`` with ``x_n`` a random neighbour of ``x``
      in the invariant graph, both encoded with gradients (SCAN's consistency term);
    * ``pose_guide`` (the graph's synchronised ``angles`` and their ``angle_clusters``):
      :func:`pose_guidance` of the pose head's first angle, on the pose head rather than on
      ``q(c|x)``; with the graph's synchronised orthogonal ``poses`` instead (groups with a
      discrete part, rotations of volumes): :func:`~mcvae_framework.model.pose_terms.orthogonal_guidance`;
    * ``balance``, which needs no graph: ``sum_k m_k log(K m_k)`` with ``m`` the batch mean of
      ``q(c|x)``, the KL from ``m`` to the uniform distribution: 0 when every component is
      used equally, ``log K`` when one component takes every image.
    """
    terms, total = {}, 0.0
    on = set()
    if guide is not None and "index" in batch:
        on = {term.name for term in loss_config.guided_terms() if guide.serves(term)}
    self_label = "self_label" in on
    if "pose_guide" in on and enc.tau is not None:
        terms["pose_guide"] = pose_guide_term(model, enc, guide, batch["index"],
                                              loss_config.pose_guide_component_weight)
        total = total + loss_config.pose_guide_weight * terms["pose_guide"]
    if not (self_label or "neighbour" in on or loss_config.balance_weight > 0):
        return terms, total
    log_q = fixed_prior_log_q(model.prior, enc.z_cluster.mean)
    if self_label:
        index = batch["index"]
        labels = guide.labels[index]
        trusted = guide.confident[index].to(log_q.dtype)
        cross_entropy = -log_q.gather(1, labels.unsqueeze(1)).squeeze(1)
        terms["self_label"] = (cross_entropy * trusted).sum() / trusted.sum().clamp_min(1.0)
        copies = loss_config.self_label_copies
        if copies and model.group is not None and bool(trusted.any()):
            keep = trusted.bool()
            x = batch["image"][keep].repeat_interleave(copies, dim=0)
            h = random_elements(model.group, len(x), generator, x)
            log_q_moved = fixed_prior_log_q(model.prior, model.encode(model.group.act(x, h)).z_cluster.mean)
            moved_labels = labels[keep].repeat_interleave(copies).unsqueeze(1)
            terms["self_label_moved"] = -log_q_moved.gather(1, moved_labels).mean()
            terms["self_label"] = 0.5 * (terms["self_label"] + terms["self_label_moved"])
        total = total + loss_config.self_label_weight * terms["self_label"]
    if "neighbour" in on:
        neighbours = guide.neighbours[batch["index"]]
        column = torch.randint(neighbours.shape[1], (len(neighbours), 1), generator=generator,
                               device=generator.device if generator is not None else None).to(neighbours.device)
        partner = guide.images[neighbours.gather(1, column).squeeze(1)]
        log_q_partner = fixed_prior_log_q(model.prior, model.encode(partner).z_cluster.mean)
        terms["neighbour"] = neighbour_disagreement(log_q, log_q_partner)
        total = total + loss_config.neighbour_weight * terms["neighbour"]
    if loss_config.balance_weight > 0:
        terms["balance"] = balance_kl(log_q)
        total = total + loss_config.balance_weight * terms["balance"]
    return terms, total


def _pose_kl(model: MCEVAE, posterior: Posterior, tau: torch.Tensor) -> torch.Tensor:
    """``(N,)`` one-sample estimate of ``KL(q(tau|x) || p(tau))``: the pose prior is the
    group's, known only through ``log_prior``."""
    return -posterior.entropy() - model.group.log_prior(tau)


def _extra_terms(model, batch, x, enc, canonical, loss_config, generator, weight: float):
    """Invariance (unsupervised) or canonical-reconstruction (supervised) terms."""
    terms, total = {}, 0.0
    if loss_config.mode == "unsupervised" and model.group is not None and loss_config.n_augment > 0:
        inv = invariance_terms(model, x, enc, canonical, loss_config.n_augment, generator,
                              copy_gradients=loss_config.copy_gradients)
        terms.update(inv)
        total = total + weight * (
            loss_config.invariance_weight * (inv["invariance"] + inv["canonical_invariance"])
            + loss_config.pose_consistency_weight * inv["pose_consistency"]
        )
    if loss_config.mode == "supervised":
        if "canonical" not in batch:
            raise KeyError("loss.mode 'supervised' needs a dataset that yields canonical images "
                           "(use a data section whose items carry `canonical`, or loss.mode: unsupervised)")
        terms["canonical"] = reconstruction_nll(canonical, batch["canonical"], loss_config, model.noise_std).mean()
        total = total + loss_config.supervised_weight * terms["canonical"]
    return terms, total


def _elbo(model: MCEVAE, batch: dict, loss_config, epoch: int, generator, cluster_kl,
          guide: Guide | None = None) -> dict[str, torch.Tensor]:
    x = batch["image"]
    out = model(x, sample=True, generator=generator)
    enc = out.encoding
    warm = ramp(epoch, loss_config.warmup_epochs)

    enumerated = None
    if enc.component is not None:  # a discrete part: every component, weighted by q(k|x)
        enumerated = enumerated_pose_terms(model, x, enc, out.canonical,
                                           lambda p, t: reconstruction_nll(p, t, loss_config, model.noise_std),
                                           generator)
        terms = {"reconstruction": enumerated[0].mean()}
    else:
        terms = {"reconstruction": reconstruction_nll(out.reconstruction, x, loss_config, model.noise_std).mean()}
    terms["cluster_kl"] = cluster_kl(enc.z_cluster, out.z_cluster).mean()
    total = terms["reconstruction"] + loss_config.cluster_weight * terms["cluster_kl"]
    if enc.z_style is not None:
        terms["style_kl"] = enc.z_style.kl_standard_normal().mean()
        total = total + warm * loss_config.beta * terms["style_kl"]
    if enc.tau is not None:
        terms["pose_kl"] = (enumerated[1] if enumerated is not None else _pose_kl(model, enc.tau, out.tau)).mean()
        total = total + loss_config.pose_weight * terms["pose_kl"]
    extra, extra_total = _extra_terms(model, batch, x, enc, out.canonical, loss_config, generator, warm)
    terms.update(extra)
    guided, guided_total = guidance_terms(model, batch, enc, loss_config, guide, generator)
    terms.update(guided)
    terms["loss"] = total + extra_total + guided_total
    return terms


def elbo_terms(model: MCEVAE, batch: dict, loss_config, *, epoch: int = 0,
               generator: torch.Generator | None = None, guide: Guide | None = None) -> dict[str, torch.Tensor]:
    """The modified ELBO on one batch.

    :param batch: a dict with ``image`` (and ``canonical`` in supervised mode).
    :param loss_config: the experiment's ``loss`` section.
    :param epoch: 0-based epoch, for the warm-up of ``beta`` and the invariance weight.
    :param generator: random source for the reparameterisation and the random moves.
    :param guide: the invariant graph's results for the graph-guided terms (a
        :class:`~mcvae_framework.model.guide.Guide`, indexed by the batch's ``index``).
    :returns: ``loss`` (scalar to minimise) and every term, each a per-image mean.
    """
    def mixture_kl(posterior: Posterior, z: torch.Tensor) -> torch.Tensor:
        return model.prior.kl(posterior.mean, posterior.logvar, z_sample=z)

    return _elbo(model, batch, loss_config, epoch, generator, mixture_kl, guide)


def pretrain_terms(model: MCEVAE, batch: dict, loss_config, *, epoch: int = 0,
                   generator: torch.Generator | None = None, guide: Guide | None = None) -> dict[str, torch.Tensor]:
    """The warm-up before the mixture prior is fitted (``loss.pretrain_epochs``): the same
    objective with ``N(0, I)`` in place of the mixture prior on ``z_c`` -- a plain VAE with
    the pose and invariance terms -- so that the latents the prior is then fitted to
    (:meth:`MCEVAE.fit_prior`) have unit scale and calibrated posterior variances. The
    guidance terms already apply, through the prior's current components."""
    return _elbo(model, batch, loss_config, epoch, generator, lambda posterior, z: posterior.kl_standard_normal(),
                 guide)


class LossModule(nn.Module):
    """The model plus its loss, as one module whose ``forward`` returns the loss terms:
    :func:`pretrain_terms` during pretraining, :func:`elbo_terms` after.

    Wrapping *this* in DistributedDataParallel makes every model method the loss calls
    part of DDP's forward, so gradients of all of them are averaged across processes.

    :param model: the :class:`~mcvae_framework.model.mcevae.MCEVAE`.
    :param loss_config: the experiment's ``loss`` section.
    """

    def __init__(self, model: nn.Module, loss_config):
        super().__init__()
        self.model = model
        self.loss_config = loss_config
        #: the invariant graph's labels and confident mask of the training set (or None).
        self.guide: Guide | None = None

    def forward(self, batch: dict, epoch: int = 0, generator: torch.Generator | None = None,
                pretrain: bool = False) -> dict[str, torch.Tensor]:
        if pretrain:
            return pretrain_terms(self.model, batch, self.loss_config, generator=generator, guide=self.guide)
        return elbo_terms(self.model, batch, self.loss_config, epoch=epoch, generator=generator, guide=self.guide)
