"""A mixture of diagonal Laplace distributions over the cluster latent ``z_c``."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from mcvae_framework import ComponentConfig
from mcvae_framework.interfaces import MixturePrior
from mcvae_framework.interfaces import validate_latents

LOG_2PI = math.log(2.0 * math.pi)


class LaplaceMixtureConfig(ComponentConfig):
    """Mixture of K diagonal Laplace distributions with learned weights, locations and scales."""

    type: Literal["laplace_mixture"] = "laplace_mixture"
    n_components: int = Field(10, ge=1, description="number of mixture components (clusters)")
    learn_weights: bool = Field(True, description="learn the mixture weights; false keeps them uniform")
    min_scale: float = Field(
        1e-3, gt=0.0, description="floor of every Laplace scale b, so that no component collapses to a spike"
    )
    seed: int = Field(0, description="seed of the random initial locations and of the k-means in init_from")


class LaplaceMixturePrior(MixturePrior):
    """``p(z) = sum_k pi_k prod_j Laplace(z_j; m_kj, b_kj)``.

    The density of one axis is ``exp(-|z - m| / b) / (2 b)``: sharper at the centre and
    heavier in the tails than a Gaussian of the same variance ``2 b^2``, and its log is
    linear far away, so densities stay finite for any finite ``z``. Parameters: weight
    logits (a buffer when ``learn_weights`` is false), ``locations (K, d)`` and
    ``raw_scales (K, d)`` with ``b = min_scale + softplus(raw_scales)``.

    There is no closed form for the KL of a Gaussian to a Laplace mixture, so :meth:`kl`
    is the Monte-Carlo estimate ``log q(z|x) - log p(z)`` at reparameterised samples
    (``kl_is_monte_carlo = True``).

    :param config: the validated :class:`LaplaceMixtureConfig`.
    :param dim: size of the latent.
    """

    kl_is_monte_carlo = True

    def __init__(self, config: LaplaceMixtureConfig, dim: int):
        super().__init__()
        self.config = config
        self.n_components = config.n_components
        self.dim = dim
        gen = torch.Generator().manual_seed(config.seed)
        logits = torch.zeros(config.n_components)
        if config.learn_weights:
            self.logits = nn.Parameter(logits)
        else:
            self.register_buffer("logits", logits)
        self.locations = nn.Parameter(torch.randn(config.n_components, dim, generator=gen))
        # Start every axis at variance 1 (b = 1/sqrt(2)), like a unit Gaussian.
        start = torch.full((config.n_components, dim), 1.0 / math.sqrt(2.0))
        self.raw_scales = nn.Parameter(self._raw_from_scales(start))

    # ---------------------------------------------------------------- parameters

    def _raw_from_scales(self, scales: torch.Tensor) -> torch.Tensor:
        """Inverse of ``min_scale + softplus(raw)`` (scales at the floor map to a very negative raw)."""
        excess = (scales - self.config.min_scale).clamp_min(1e-6)
        return excess + torch.log(-torch.expm1(-excess))

    def scales(self) -> torch.Tensor:
        """``(K, d)`` Laplace scales ``b``."""
        return self.config.min_scale + F.softplus(self.raw_scales)

    def log_weights(self) -> torch.Tensor:
        return torch.log_softmax(self.logits, dim=0)

    def component_means(self) -> torch.Tensor:
        return self.locations

    def component_covariances(self) -> torch.Tensor:
        return torch.diag_embed(2.0 * self.scales().square())

    # ---------------------------------------------------------------- densities

    def _as_latents(self, z: torch.Tensor, what: str = "z") -> torch.Tensor:
        if z.ndim != 2 or z.shape[-1] != self.dim:
            raise ValueError(f"laplace_mixture: {what} must have shape (N, {self.dim}), got {tuple(z.shape)}")
        return z.to(device=self.locations.device, dtype=self.locations.dtype)

    def log_prob_per_component(self, z: torch.Tensor) -> torch.Tensor:
        z = self._as_latents(z)
        scales = self.scales()
        distance = (z.unsqueeze(1) - self.locations.unsqueeze(0)).abs() / scales.unsqueeze(0)  # (N, K, d)
        log_density = -(torch.log(2.0 * scales).sum(-1).unsqueeze(0) + distance.sum(-1))
        return self.log_weights().unsqueeze(0) + log_density

    # ---------------------------------------------------------------- the ELBO's cluster term

    def kl(self, q_mean, q_logvar, z_sample=None):
        """Monte-Carlo estimate ``log q(z|x) - log p(z)`` at one reparameterised sample per
        row: ``z_sample`` when given, else one drawn here with torch's global generator.

        :param q_mean: ``(N, dim)`` posterior means.
        :param q_logvar: ``(N, dim)`` posterior log variances.
        :param z_sample: ``(N, dim)`` optional reparameterised sample of ``q``.
        :return: ``(N,)``; unbiased for ``KL(q(z|x) || p(z))``, ``>= 0`` only on average.
        """
        q_mean = self._as_latents(q_mean, "q_mean")
        q_logvar = self._as_latents(q_logvar, "q_logvar")
        if z_sample is None:
            z = q_mean + torch.exp(0.5 * q_logvar) * torch.randn_like(q_mean)
        else:
            z = self._as_latents(z_sample, "z_sample")
        log_q = -0.5 * (self.dim * LOG_2PI + q_logvar.sum(-1) + ((z - q_mean).square() * torch.exp(-q_logvar)).sum(-1))
        return log_q - self.log_prob(z)

    # ---------------------------------------------------------------- sampling and fitting

    @torch.no_grad()
    def sample(self, n, generator=None):
        """``n`` draws by inverse CDF: ``z = m - b sign(u) log(1 - 2|u|)``, ``u`` uniform in
        ``(-1/2, 1/2)``.

        :param generator: a ``torch.Generator`` on the prior's device, for reproducible draws.
        """
        like = dict(dtype=self.locations.dtype, device=self.locations.device)
        component = torch.multinomial(self.log_weights().exp(), n, replacement=True, generator=generator)
        eps = torch.finfo(like["dtype"]).eps
        u = (torch.rand(n, self.dim, generator=generator, **like) - 0.5).clamp(-0.5 + eps, 0.5 - eps)
        z = self.locations[component] - self.scales()[component] * torch.sign(u) * torch.log1p(-2.0 * u.abs())
        return z, component

    @torch.no_grad()
    def init_from(self, latents):
        """Warm start: k-means (scikit-learn) splits the latents into K groups; each
        component then takes its group's maximum-likelihood Laplace fit (location = the
        median, scale = the mean absolute deviation from it) and, when the weights are
        learned, the group's share of the points.

        :param latents: ``(N, dim)`` encoded data, ``N >= n_components``, finite.
        :raises ValueError: non-finite latents, a wrong shape or too few points.
        """
        from sklearn.cluster import KMeans  # heavy import, only needed here

        data = validate_latents(latents, self.dim, self.n_components).detach().cpu().double()
        labels = KMeans(n_clusters=self.n_components, n_init=4, random_state=self.config.seed).fit_predict(data.numpy())
        labels = torch.as_tensor(labels)
        locations = torch.empty(self.n_components, self.dim, dtype=torch.float64)
        scales = torch.empty_like(locations)
        counts = torch.bincount(labels, minlength=self.n_components).double()
        for k in range(self.n_components):
            members = data[labels == k]
            locations[k] = members.median(dim=0).values
            scales[k] = (members - locations[k]).abs().mean(dim=0).clamp_min(self.config.min_scale)
        like = dict(dtype=self.locations.dtype, device=self.locations.device)
        self.locations.copy_(locations.to(**like))
        self.raw_scales.copy_(self._raw_from_scales(scales).to(**like))
        if self.config.learn_weights:
            self.logits.copy_(torch.log(counts.clamp_min(1.0) / counts.sum()).to(**like))
