"""A shear group written from the plugin guide of the previous release (before
``PLUGIN_API_VERSION`` 1): it subclasses ``AffineGroup2D`` and overrides ``distance`` with a
key of its own (``shear``), as that guide allowed, and sets no ``primary_error`` (the
guide said it defaults to the first key ``distance`` returns). Keep it as it is: it is
the promise that such a plugin passes the contract kit unchanged."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from mcvae_framework import ComponentConfig, hookimpl
from mcvae_framework.interfaces import AffineGroup2D


class ShearConfig(ComponentConfig):
    type: Literal["shear"] = "shear"
    max_shear: float = Field(0.3, gt=0, description="horizontal shears k are drawn uniformly in [-max_shear, max_shear]")


class HorizontalShear(AffineGroup2D):
    """``p -> [[1, k], [0, 1]] p``: the content slides sideways in proportion to its height."""

    name = "shear"
    dim = 1
    coordinate_names = ("k",)
    has_translation = False

    def __init__(self, config: ShearConfig):
        self.config = config

    def exp(self, tau):
        self.check_tau(tau)
        g = torch.eye(3, dtype=tau.dtype, device=tau.device).repeat(len(tau), 1, 1)
        g[:, 0, 1] = tau[:, 0]
        return g

    def log(self, g):
        self.check_matrices(g)
        return g[:, 0, 1:2].clone()

    def sample(self, n, generator=None, *, dtype=None, device=None):
        u = torch.rand(n, 1, generator=generator, dtype=dtype or torch.get_default_dtype())
        return ((2 * u - 1) * self.config.max_shear).to(device)

    def log_prior(self, tau):
        self.check_tau(tau)
        return -0.5 * (tau / self.config.max_shear).pow(2).sum(-1)

    def distance(self, g1, g2):
        self.check_matrices(g1, "g1")
        self.check_matrices(g2, "g2")
        return {"shear": (g1[:, 0, 1] - g2[:, 0, 1]).abs()}


@hookimpl
def mcvae_register_groups(register):
    register(ShearConfig, HorizontalShear)
