"""The Laplace mixture prior passes mcvae_framework's prior contract kit, plus its own checks."""

import math

import torch

from mcvae_framework import build
from mcvae_framework.testing import MixturePriorContract


class TestLaplaceMixture(MixturePriorContract):
    """Every generic check of a mixture prior: densities integrate to 1, samples follow
    them, the Monte-Carlo kl agrees with the kit's estimate, gradients are finite, ..."""

    prior_config = {"type": "laplace_mixture", "n_components": 3}


def test_one_component_matches_torch_laplace():
    """An independent reference: torch.distributions.Laplace, summed over the axes."""
    prior = build("prior", {"type": "laplace_mixture", "n_components": 1}, dim=2).double()
    z = torch.randn(10, 2, dtype=torch.float64)
    reference = torch.distributions.Laplace(prior.locations[0], prior.scales()[0]).log_prob(z).sum(-1)
    torch.testing.assert_close(prior.log_prob(z), reference)


def test_default_scales_give_unit_variance():
    prior = build("prior", {"type": "laplace_mixture", "n_components": 4}, dim=3)
    variances = torch.diagonal(prior.component_covariances(), dim1=-2, dim2=-1)
    torch.testing.assert_close(variances, torch.ones(4, 3), rtol=1e-5, atol=1e-5)
    assert math.isclose(float(prior.log_weights().detach().exp().sum()), 1.0, rel_tol=1e-6)
