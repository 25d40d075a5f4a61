"""The mixture-prior interface for the invariant cluster latent ``z_c``."""

from __future__ import annotations

import abc

import torch
from torch import nn


class MixturePrior(nn.Module, abc.ABC):
    """``p(z) = sum_k pi_k p_k(z)`` over ``dim``-dimensional latents, with learned parameters.

    Components are the clusters: an image's cluster is ``argmax_k responsibilities``.
    """

    n_components: int
    dim: int

    @abc.abstractmethod
    def log_prob_per_component(self, z: torch.Tensor) -> torch.Tensor:
        """``(N, K)``: ``log pi_k + log p_k(z)``."""

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``(N,)`` log density of the mixture."""
        return torch.logsumexp(self.log_prob_per_component(z), dim=-1)

    def responsibilities(self, z: torch.Tensor) -> torch.Tensor:
        """``(N, K)``: ``p(k | z)``, rows summing to 1."""
        return torch.softmax(self.log_prob_per_component(z), dim=-1)

    @abc.abstractmethod
    def kl(self, q_mean: torch.Tensor, q_logvar: torch.Tensor, z_sample: torch.Tensor | None = None) -> torch.Tensor:
        """``(N,)`` clustering term of the ELBO for the diagonal Gaussian ``q(z | x)``."""

    @abc.abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z (n, dim), component (n,))``."""

    @abc.abstractmethod
    def init_from(self, latents: torch.Tensor) -> None:
        """Warm start from encoded data ``(N, dim)`` (e.g. a scikit-learn mixture fit)."""
