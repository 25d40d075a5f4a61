"""The config class and the group: C4, the turns by 0, 90, 180 and 270 degrees."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from mcvae_framework import ComponentConfig
from mcvae_framework.interfaces import AffineGroup2D, OrthogonalBlock2D


class QuarterTurnsConfig(ComponentConfig):
    """The four quarter turns of the plane about the image centre."""

    type: Literal["c4"] = "c4"
    turns: list[int] = Field(
        [0, 1, 2, 3], min_length=1,
        description="the numbers of quarter turns `sample` draws from, uniformly (e.g. [0, 2]: upright or upside down)",
    )


class QuarterTurns(OrthogonalBlock2D, AffineGroup2D):
    """C4 as ``(N, 3, 3)`` homogeneous rotation matrices with exact entries 0 and +-1.

    A finite group: ``tau`` has no columns, ``exp`` gives the identity, and every element is
    ``element(tau, k) = r_k``, the turn by ``k`` quarters (``component_elements``). Deriving
    from ``AffineGroup2D`` supplies the action (exact here: a quarter turn maps the pixel
    grid onto itself), ``compose``, ``inverse`` and the rotation error; ``OrthogonalBlock2D``
    the orthogonal part (the ``2 x 2`` block) that the invariant graph synchronises.
    """

    name = "c4"
    dim = 0
    coordinate_names = ()
    has_translation = False
    has_scale = False
    has_rotation = True  # no column is named "theta": say so
    n_components = 4
    component_names = ("0 degrees", "90 degrees", "180 degrees", "270 degrees")
    discrete_part = "quarter turn"
    # OrthogonalBlock2D: the 2 x 2 rotations are what the invariant graph synchronises

    def __init__(self, config: QuarterTurnsConfig):
        self.config = config

    # ------------------------------------------------------------ the empty continuous part

    def exp(self, tau: torch.Tensor) -> torch.Tensor:
        self.check_tau(tau)
        return self.identity(tau.shape[0], dtype=tau.dtype, device=tau.device)

    def log(self, g: torch.Tensor) -> torch.Tensor:
        self.check_matrices(g)
        return g.new_zeros(g.shape[0], 0)

    def sample(self, n, generator=None, *, dtype=None, device=None) -> torch.Tensor:
        if device is None:
            device = generator.device if generator is not None else torch.device("cpu")
        return torch.zeros(n, 0, dtype=dtype or torch.get_default_dtype(), device=device)

    def log_prior(self, tau: torch.Tensor) -> torch.Tensor:
        self.check_tau(tau)
        return tau.new_zeros(tau.shape[0])  # nothing continuous: the prior is on the turn alone

    # ------------------------------------------------------------ the discrete part

    def component_elements(self, *, dtype=None, device=None) -> torch.Tensor:
        """``r_k``, the turn by ``k`` quarters, ``k = 0..3``, with exact entries."""
        cos = torch.tensor([1.0, 0.0, -1.0, 0.0], dtype=dtype or torch.get_default_dtype(), device=device)
        sin = torch.tensor([0.0, 1.0, 0.0, -1.0], dtype=cos.dtype, device=device)
        zero, one = torch.zeros_like(cos), torch.ones_like(cos)
        return torch.stack((cos, -sin, zero, sin, cos, zero, zero, zero, one), dim=-1).view(4, 3, 3)

    def component_of(self, g: torch.Tensor) -> torch.Tensor:
        """The number of quarter turns, read from the rotation angle."""
        self.check_matrices(g)
        quarters = torch.round(self.rotation_angle(g) / (math.pi / 2)).to(torch.int64)
        return torch.remainder(quarters, 4)

    def sample_component(self, n, generator=None, *, device=None) -> torch.Tensor:
        """Uniform over the configured ``turns``."""
        if device is None:
            device = generator.device if generator is not None else torch.device("cpu")
        turns = torch.tensor(self.config.turns, dtype=torch.int64, device=device)
        return turns[torch.randint(len(turns), (n,), generator=generator, device=device)]

    def search_elements(self, n: int) -> torch.Tensor:
        """The invariant graph compares two images under all four turns."""
        return self.component_elements()
