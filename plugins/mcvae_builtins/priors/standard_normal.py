"""``standard_normal``: N(0, I), the plain-VAE baseline prior (one component, no parameters)."""

from __future__ import annotations

from typing import Literal

import torch

from mcvae_framework import ComponentConfig
from mcvae_framework.interfaces import MixturePrior
from mcvae_framework.interfaces import validate_latents

from ._common import LOG_2PI, as_model_tensor, check_dim


class StandardNormalConfig(ComponentConfig):
    """The standard normal prior N(0, I): one component, nothing learned."""

    type: Literal["standard_normal"] = "standard_normal"


class StandardNormalPrior(MixturePrior):
    """``N(0, I)`` as a one-component mixture: responsibilities are all ones and
    :meth:`kl` is the closed-form ``KL(q(z|x) || N(0, I))``.

    It has no parameters; an empty buffer carries the dtype and device, so ``.to()``
    still decides where its outputs live.

    :param config: the validated :class:`StandardNormalConfig`.
    :param dim: latent size.
    """

    def __init__(self, config: StandardNormalConfig, dim: int):
        super().__init__()
        self.config = config
        self.n_components = 1
        self.dim = dim
        self.register_buffer("_anchor", torch.zeros(0))

    def log_weights(self):
        return self._anchor.new_zeros(1)

    def component_means(self):
        return self._anchor.new_zeros(1, self.dim)

    def component_covariances(self):
        return torch.eye(self.dim, dtype=self._anchor.dtype, device=self._anchor.device).unsqueeze(0)

    def log_prob_per_component(self, z):
        z = as_model_tensor(z, self._anchor, self.dim)
        return (-0.5 * (self.dim * LOG_2PI + z.square().sum(-1))).unsqueeze(-1)

    def kl(self, q_mean, q_logvar, z_sample=None):
        """Closed form ``KL(N(q_mean, diag exp(q_logvar)) || N(0, I))``, ``(N,)``;
        ``z_sample`` is not needed and ignored."""
        q_mean = as_model_tensor(q_mean, self._anchor, self.dim, "q_mean")
        q_logvar = as_model_tensor(q_logvar, self._anchor, self.dim, "q_logvar")
        return 0.5 * (torch.exp(q_logvar) + q_mean.square() - 1.0 - q_logvar).sum(-1)

    @torch.no_grad()
    def sample(self, n, generator=None):
        z = torch.randn(n, self.dim, generator=generator, dtype=self._anchor.dtype, device=self._anchor.device)
        return z, torch.zeros(n, dtype=torch.long, device=self._anchor.device)

    def init_from(self, latents):
        """A no-op (nothing to fit); the latents are still checked, as for every prior.

        :raises ValueError: non-finite latents or a wrong shape.
        """
        validate_latents(latents, self.dim, self.n_components)


def make_standard_normal(config: StandardNormalConfig, dim: int) -> StandardNormalPrior:
    """Factory registered for the ``standard_normal`` tag: ``factory(config, dim=d)``."""
    return StandardNormalPrior(config, check_dim(dim, "standard_normal"))
