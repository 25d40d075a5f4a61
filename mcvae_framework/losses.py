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
import torch.nn.functional as F

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
        nll = F.binary_cross_entropy(prediction.clamp(_EPS, 1 - _EPS), target, reduction="none")
    else:
        std = loss_config.gaussian_std
        nll = 0.5 * ((prediction - target) / std).pow(2) + torch.log(torch.tensor(std * (2 * torch.pi) ** 0.5))
    return nll.flatten(1).sum(-1)


def _invariant_means(enc: Encoding) -> torch.Tensor:
    parts = [enc.z_cluster.mean] + ([enc.z_style.mean] if enc.z_style is not None else [])
    return torch.cat(parts, dim=-1)


def invariance_terms(model: MCEVAE, x: torch.Tensor, enc: Encoding, canonical: torch.Tensor,
                     n_augment: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Penalties comparing ``x`` with ``n_augment`` randomly moved copies of it.

    All copies go through the encoder in **one batched pass**. ``invariance``: squared
    distance of the copies' invariant posterior means to the original's.
    ``canonical_invariance``: mean squared difference per pixel of the copies' canonical decodings to
    the original's (held fixed: the copies learn to match it). ``pose_consistency``:
    ``|log(exp(tau(h.x))^-1 h exp(tau(x)))|^2`` -- the pose of a moved copy is the move
    composed with the original's pose.
    """
    group = model.group
    n = x.shape[0]
    h_tau = group.sample(n * n_augment, generator=generator).to(device=x.device, dtype=x.dtype)
    h = group.exp(h_tau)
    copies = group.act(x.repeat_interleave(n_augment, dim=0), h)
    enc_copies = model.encode(copies)

    means = _invariant_means(enc).repeat_interleave(n_augment, dim=0)
    invariance = (_invariant_means(enc_copies) - means).pow(2).sum(-1).view(n, n_augment).mean(-1)

    style = enc_copies.z_style.mean if enc_copies.z_style is not None else None
    canonical_copies = model.decode(enc_copies.z_cluster.mean, style)
    target = canonical.detach().repeat_interleave(n_augment, dim=0)
    canonical_invariance = (canonical_copies - target).pow(2).flatten(1).mean(-1).view(n, n_augment).mean(-1)

    pose_x = group.exp(enc.tau.mean).repeat_interleave(n_augment, dim=0)
    expected = group.compose(h, pose_x)
    residual = group.log(group.compose(group.inverse(group.exp(enc_copies.tau.mean)), expected))
    pose_consistency = residual.pow(2).sum(-1).view(n, n_augment).mean(-1)
    return {
        "invariance": invariance.mean(),
        "canonical_invariance": canonical_invariance.mean(),
        "pose_consistency": pose_consistency.mean(),
    }


def _pose_kl(model: MCEVAE, posterior: Posterior, tau: torch.Tensor) -> torch.Tensor:
    """``(N,)`` one-sample estimate of ``KL(q(tau|x) || p(tau))``: the pose prior is the
    group's, known only through ``log_prior``."""
    return -posterior.entropy() - model.group.log_prior(tau)


def _extra_terms(model, batch, x, enc, canonical, loss_config, generator, weight: float):
    """Invariance (unsupervised) or canonical-reconstruction (supervised) terms."""
    terms, total = {}, 0.0
    if loss_config.mode == "unsupervised" and model.group is not None and loss_config.n_augment > 0:
        inv = invariance_terms(model, x, enc, canonical, loss_config.n_augment, generator)
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


def elbo_terms(model: MCEVAE, batch: dict, loss_config, *, epoch: int = 0,
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The modified ELBO on one batch.

    :param batch: a dict with ``image`` (and ``canonical`` in supervised mode).
    :param loss_config: the experiment's ``loss`` section.
    :param epoch: 0-based epoch, for the warm-up of ``beta`` and the invariance weight.
    :param generator: random source for the reparameterisation and the random moves.
    :returns: ``loss`` (scalar to minimise) and every term, each a per-image mean.
    """
    x = batch["image"]
    out = model(x, sample=True, generator=generator)
    enc = out.encoding
    warm = ramp(epoch, loss_config.warmup_epochs)

    terms = {"reconstruction": reconstruction_nll(out.reconstruction, x, loss_config).mean()}
    terms["cluster_kl"] = model.prior.kl(enc.z_cluster.mean, enc.z_cluster.logvar, z_sample=out.z_cluster).mean()
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


def pretrain_terms(model: MCEVAE, batch: dict, loss_config, *, generator: torch.Generator | None = None
                   ) -> dict[str, torch.Tensor]:
    """Autoencoding warm-up before the prior is fitted: reconstruction from the posterior
    means, plus the invariance (or supervised canonical) terms, without the KL terms."""
    x = batch["image"]
    out = model(x, sample=False)
    terms = {"reconstruction": reconstruction_nll(out.reconstruction, x, loss_config).mean()}
    extra, extra_total = _extra_terms(model, batch, x, out.encoding, out.canonical, loss_config, generator, 1.0)
    terms.update(extra)
    terms["loss"] = terms["reconstruction"] + extra_total
    return terms
