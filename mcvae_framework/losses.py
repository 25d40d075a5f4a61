"""The modified ELBO of MCE-VAE, every term reported separately.

All terms are per-image means over the batch (the reconstruction is summed over pixels),
so ``loss`` is the negative ELBO per image plus the weighted invariance penalties::

    loss = reconstruction + pose_weight * pose_kl + beta * style_kl
         + cluster_weight * cluster_kl
         + invariance_weight * (invariance + canonical_invariance)      (unsupervised)
         + pose_consistency_weight * pose_consistency                   (unsupervised)
         + supervised_weight * canonical                                (supervised)

``beta`` and the invariance weights ramp up over ``warmup_epochs``.
"""

from __future__ import annotations

import torch

from .model import MCEVAE, Encoding, Posterior

_EPS = 1e-6


def ramp(epoch: int, warmup_epochs: int) -> float:
    """Linear warm-up factor: ``1/(W+1), 2/(W+1), ..., 1`` over the first ``W`` epochs."""
    if warmup_epochs <= 0:
        return 1.0
    return min(1.0, (epoch + 1) / (warmup_epochs + 1))


def reconstruction_nll(prediction: torch.Tensor, target: torch.Tensor, loss_config) -> torch.Tensor:
    """``(N,)`` negative log-likelihood of ``target`` under the decoder's ``prediction``."""
    if loss_config.likelihood == "bernoulli":
        # Written out rather than F.binary_cross_entropy, which raises on a NaN input:
        # a NaN must reach the trainer's check, which names the term.
        p = prediction.clamp(_EPS, 1 - _EPS)
        nll = -(target * torch.log(p) + (1 - target) * torch.log1p(-p))
    else:
        std = loss_config.gaussian_std
        nll = 0.5 * ((prediction - target) / std).pow(2) + torch.log(torch.tensor(std * (2 * torch.pi) ** 0.5))
    return nll.flatten(1).sum(-1)


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
      is the move composed with the original's pose.
    """
    group = model.group
    n = x.shape[0]
    h_tau = group.sample(n * n_augment, generator=generator).to(device=x.device, dtype=x.dtype)
    h = group.exp(h_tau)
    with torch.set_grad_enabled(copy_gradients and torch.is_grad_enabled()):
        copies = group.act(x.repeat_interleave(n_augment, dim=0), h)
        enc_copies = model.encode(copies)
        style = enc_copies.z_style.mean if enc_copies.z_style is not None else None
        canonical_copies = model.decode(enc_copies.z_cluster.mean, style)
        # The pose of x that each copy implies: h^-1 exp(tau(h.x)).
        implied_pose = group.compose(group.inverse(h), group.exp(enc_copies.tau.mean))

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
    pose_x = group.exp(enc.tau.mean).repeat_interleave(n_augment, dim=0)
    residual = group.log(group.compose(group.inverse(pose_x), implied_pose))
    return {
        "invariance": per_image(invariance),
        "canonical_invariance": per_image(canonical_invariance),
        "pose_consistency": per_image(residual.pow(2).sum(-1)),
    }


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
                           "(set a `transform` in the data section, or use loss.mode: unsupervised)")
        terms["canonical"] = reconstruction_nll(canonical, batch["canonical"], loss_config).mean()
        total = total + loss_config.supervised_weight * terms["canonical"]
    return terms, total


def _elbo(model: MCEVAE, batch: dict, loss_config, epoch: int, generator, cluster_kl) -> dict[str, torch.Tensor]:
    x = batch["image"]
    out = model(x, sample=True, generator=generator)
    enc = out.encoding
    warm = ramp(epoch, loss_config.warmup_epochs)

    terms = {"reconstruction": reconstruction_nll(out.reconstruction, x, loss_config).mean()}
    terms["cluster_kl"] = cluster_kl(enc.z_cluster, out.z_cluster).mean()
    total = terms["reconstruction"] + loss_config.cluster_weight * terms["cluster_kl"]
    if enc.z_style is not None:
        terms["style_kl"] = enc.z_style.kl_standard_normal().mean()
        total = total + warm * loss_config.beta * terms["style_kl"]
    if enc.tau is not None:
        terms["pose_kl"] = _pose_kl(model, enc.tau, out.tau).mean()
        total = total + loss_config.pose_weight * terms["pose_kl"]
    extra, extra_total = _extra_terms(model, batch, x, enc, out.canonical, loss_config, generator, warm)
    terms.update(extra)
    terms["loss"] = total + extra_total
    return terms


def elbo_terms(model: MCEVAE, batch: dict, loss_config, *, epoch: int = 0,
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The modified ELBO on one batch.

    :param batch: a dict with ``image`` (and ``canonical`` in supervised mode).
    :param loss_config: the experiment's ``loss`` section.
    :param epoch: 0-based epoch, for the warm-up of ``beta`` and the invariance weight.
    :param generator: random source for the reparameterisation and the random moves.
    :returns: ``loss`` (scalar to minimise) and every term, each a per-image mean.
    """
    def mixture_kl(posterior: Posterior, z: torch.Tensor) -> torch.Tensor:
        return model.prior.kl(posterior.mean, posterior.logvar, z_sample=z)

    return _elbo(model, batch, loss_config, epoch, generator, mixture_kl)


def pretrain_terms(model: MCEVAE, batch: dict, loss_config, *, epoch: int = 0,
                   generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The warm-up before the mixture prior is fitted (``loss.pretrain_epochs``): the same
    objective with ``N(0, I)`` in place of the mixture prior on ``z_c`` -- a plain VAE with
    the pose and invariance terms -- so that the latents the prior is then fitted to
    (:meth:`MCEVAE.fit_prior`) have unit scale and calibrated posterior variances."""
    return _elbo(model, batch, loss_config, epoch, generator, lambda posterior, z: posterior.kl_standard_normal())
