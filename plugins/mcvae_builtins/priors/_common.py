"""Pieces the built-in priors share: config fields, mixture weights, Gaussian formulas."""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import nn

from mcvae_framework import ComponentConfig

LOG_2PI = math.log(2.0 * math.pi)


class MixtureConfigBase(ComponentConfig):
    """Fields every learned mixture prior has."""

    n_components: int = Field(
        10, ge=1, description="number of mixture components (clusters); at least 1"
    )
    learn_weights: bool = Field(
        True,
        description="learn the mixture weights; false keeps them uniform, which guards "
        "against the weight collapse (one component taking every image) that learned "
        "weights can show in VaDE-style training",
    )
    seed: int = Field(
        0, description="seed of the random initial means and of the scikit-learn fit in init_from"
    )
    init_restarts: int = Field(
        10, ge=1,
        description="restarts of the scikit-learn fit in init_from (its n_init); the fit with "
        "the best likelihood is kept, which makes the warm start far less dependent on luck",
    )


def check_dim(dim, tag: str) -> int:
    """The ``dim`` context of a prior factory, checked."""
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"prior {tag!r}: dim (the latent size) must be a positive integer, got {dim!r}")
    return dim


class MixtureWeights(nn.Module):
    """Mixture weights as unconstrained logits; a learned parameter or a fixed uniform buffer."""

    def __init__(self, n_components: int, learn: bool):
        super().__init__()
        logits = torch.zeros(n_components)
        if learn:
            self.logits = nn.Parameter(logits)
        else:
            self.register_buffer("logits", logits)
        self.learn = learn

    def log_weights(self) -> torch.Tensor:
        return torch.log_softmax(self.logits, dim=0)

    @torch.no_grad()
    def set_from(self, weights) -> None:
        """Copy fitted weights in (ignored when the weights are fixed uniform)."""
        if self.learn:
            w = torch.as_tensor(weights, dtype=self.logits.dtype, device=self.logits.device)
            self.logits.copy_(torch.log(w.clamp_min(torch.finfo(w.dtype).tiny)))


def initial_means(n_components: int, dim: int, seed: int) -> torch.Tensor:
    """Seeded standard-normal means: distinct components before any ``init_from``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n_components, dim, generator=gen)


def diag_gaussian_log_density(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``(N, K)`` log N(z_n; mean_k, diag(exp(logvar_k))) for ``z (N, d)``, ``mean/logvar (K, d)``."""
    diff = z.unsqueeze(1) - mean.unsqueeze(0)
    maha = (diff.square() * torch.exp(-logvar).unsqueeze(0)).sum(-1)
    return -0.5 * (z.shape[-1] * LOG_2PI + logvar.sum(-1).unsqueeze(0) + maha)


def diag_posterior_log_density(z: torch.Tensor, q_mean: torch.Tensor, q_logvar: torch.Tensor) -> torch.Tensor:
    """``(N,)`` log q(z_n) for the row-wise diagonal Gaussian ``N(q_mean_n, exp(q_logvar_n))``."""
    maha = ((z - q_mean).square() * torch.exp(-q_logvar)).sum(-1)
    return -0.5 * (z.shape[-1] * LOG_2PI + q_logvar.sum(-1) + maha)


def categorical_kl(log_gamma: torch.Tensor, log_pi: torch.Tensor) -> torch.Tensor:
    """``(N,)`` KL(gamma_n || pi) from log-probabilities (zero-probability terms vanish)."""
    return (log_gamma.exp() * (log_gamma - log_pi.unsqueeze(0))).sum(-1)


def reparameterised_sample(q_mean: torch.Tensor, q_logvar: torch.Tensor) -> torch.Tensor:
    """One draw of ``q`` per row: ``mean + exp(logvar / 2) * eps`` (torch's global RNG)."""
    return q_mean + torch.exp(0.5 * q_logvar) * torch.randn_like(q_mean)


def as_model_tensor(z: torch.Tensor, like: torch.Tensor, dim: int, what: str = "z") -> torch.Tensor:
    """Check ``z`` is ``(N, dim)``; move it to ``like``'s device and dtype."""
    if z.ndim != 2 or z.shape[-1] != dim:
        raise ValueError(f"{what} must have shape (N, {dim}), got {tuple(z.shape)}")
    return z.to(device=like.device, dtype=like.dtype)
