"""Two group plugins written against the plugin guide (docs/plugins.md) as it stood before
groups could declare a data kind, an element shape or a discrete part (issue 30): they use
only what that guide documented, so they stand for the third-party plugins already out
there. ``tests/test_discrete_and_volume_groups.py`` proves they still pass the contract kit
and train, evaluate, plot and predict unchanged.

* ``docs_shear``: the guide's own ``MyShearGroup`` example made complete -- horizontal
  shears ``[[1, k, 0], [0, 1, 0], [0, 0, 1]]``, derived from ``AffineGroup2D``, its own error
  key ``shear`` as ``primary_error``, a subgroup of ``GL+(3)`` as its geomstats space;
* ``docs_turn``: rotations written from the bare ``LieGroup`` interface (no
  ``AffineGroup2D``): every method of the guide's list implemented by hand.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from mcvae_framework import ComponentConfig, hookimpl
from mcvae_framework.interfaces import AffineGroup2D, LieGroup


class ShearConfig(ComponentConfig):
    """Horizontal shears of the content."""

    type: Literal["docs_shear"] = "docs_shear"
    max_shear: float = Field(0.3, gt=0, le=1, description="largest |k| drawn by sample")


class MyShearGroup(AffineGroup2D):
    name = "docs_shear"
    dim = 1
    coordinate_names = ("k",)
    has_translation = False
    has_scale = False
    primary_error = "shear"

    def __init__(self, config):
        self.config = config

    def exp(self, tau):
        self.check_tau(tau)
        g = self.identity(tau.shape[0], dtype=tau.dtype, device=tau.device)
        g[:, 0, 1] = tau[:, 0]
        return g

    def log(self, g):
        self.check_matrices(g)
        return g[:, 0, 1:2]

    def sample(self, n, generator=None, *, dtype=None, device=None):
        if device is None:
            device = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand(n, 1, generator=generator, dtype=dtype or torch.get_default_dtype(), device=device)
        return (2 * u - 1) * self.config.max_shear

    def log_prior(self, tau):
        self.check_tau(tau)
        return -0.5 * (tau[:, 0] / 0.5) ** 2 - math.log(0.5 * math.sqrt(2 * math.pi))

    def distance(self, g1, g2):
        return {"shear": (g1[:, 0, 1] - g2[:, 0, 1]).abs()}

    def geomstats_space(self, geomstats):
        # horizontal shears [[1, k, 0], [0, 1, 0], [0, 0, 1]]: a subgroup of GL+(3)
        return geomstats.GeneralLinear(3, positive_det=True, equip=False)


class TurnConfig(ComponentConfig):
    """Rotations about the image centre, written without AffineGroup2D."""

    type: Literal["docs_turn"] = "docs_turn"
    max_angle_deg: float = Field(90.0, gt=0, le=180, description="largest |angle| drawn by sample")


def _shape(t):
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


class BareTurns(LieGroup):
    dim = 1
    coordinate_names = ("theta",)
    rotation_error = "rotation_deg"

    def __init__(self, config):
        self.config = config

    def _tau(self, tau):
        if not isinstance(tau, torch.Tensor) or tau.dim() != 2 or tau.shape[1] != 1:
            raise ValueError(f"docs_turn: tau must have shape (N, 1), got {_shape(tau)}")

    def _g(self, g):
        if not isinstance(g, torch.Tensor) or g.dim() != 3 or tuple(g.shape[1:]) != (3, 3):
            raise ValueError(f"docs_turn: elements must have shape (N, 3, 3), got {_shape(g)}")

    def exp(self, tau):
        self._tau(tau)
        c, s, z, o = torch.cos(tau[:, 0]), torch.sin(tau[:, 0]), torch.zeros_like(tau[:, 0]), torch.ones_like(tau[:, 0])
        return torch.stack((c, -s, z, s, c, z, z, z, o), -1).view(-1, 3, 3)

    def log(self, g):
        self._g(g)
        angle = torch.atan2(g[:, 1, 0] - g[:, 0, 1], g[:, 0, 0] + g[:, 1, 1])
        return torch.where(angle <= -math.pi, angle + 2 * math.pi, angle)[:, None]

    def compose(self, g1, g2):
        self._g(g1)
        self._g(g2)
        return g1 @ g2

    def inverse(self, g):
        self._g(g)
        return g.transpose(1, 2)

    def identity(self, n, *, dtype=None, device=None):
        return torch.eye(3, dtype=dtype or torch.get_default_dtype(), device=device).expand(n, 3, 3).clone()

    def act(self, images, g):
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[-1] != images.shape[-2]:
            raise ValueError(f"docs_turn: images must be a square (N, C, H, H) batch, got {_shape(images)}")
        self._g(g)
        if g.shape[0] not in (1, images.shape[0]):
            raise ValueError(f"docs_turn: {images.shape[0]} images but elements of shape {_shape(g)}")
        g = g.to(images).expand(images.shape[0], 3, 3)
        if bool((g == torch.eye(3, dtype=g.dtype, device=g.device)).all()):
            return images.clone() if not (torch.is_grad_enabled() and g.requires_grad) else \
                images + 0 * g.sum()
        grid = F.affine_grid(g.transpose(1, 2)[:, :2, :], list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def sample(self, n, generator=None, *, dtype=None, device=None):
        if device is None:
            device = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand(n, 1, generator=generator, dtype=dtype or torch.get_default_dtype(), device=device)
        return (2 * u - 1) * math.radians(self.config.max_angle_deg)

    def log_prior(self, tau):
        self._tau(tau)
        width = math.radians(60)
        return -0.5 * (tau[:, 0] / width) ** 2 - math.log(width * math.sqrt(2 * math.pi))

    def distance(self, g1, g2):
        diff = self.log(g1)[:, 0] - self.log(g2)[:, 0]
        return {"rotation_deg": torch.rad2deg((torch.remainder(diff + math.pi, 2 * math.pi) - math.pi).abs())}

    def half_turn(self, *, dtype=None, device=None):
        return self.exp(torch.full((1, 1), math.pi, dtype=dtype or torch.get_default_dtype(), device=device))


@hookimpl
def mcvae_register_groups(register):
    register(ShearConfig, MyShearGroup)
    register(TurnConfig, BareTurns)
