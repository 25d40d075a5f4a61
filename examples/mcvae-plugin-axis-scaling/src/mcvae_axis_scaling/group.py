"""The group of axis-aligned scalings ``diag(e^a, e^b)``, acting on images by zooming
their width and height independently."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, field_validator

from mcvae_framework import ComponentConfig
from mcvae_framework.interfaces import AffineGroup2D


class AxisScalingConfig(ComponentConfig):
    """Anisotropic scaling along the image axes: ``tau = (log_sx, log_sy)``.

    ``sample`` draws each log-scale uniformly in ``[-max_log_scale, max_log_scale]``
    (independently: a digit may get wider and shorter at once); the pose prior is a
    normal of std ``prior_std`` on each coordinate.
    """

    type: Literal["axis_scaling"] = "axis_scaling"
    max_log_scale: float = Field(
        0.2,
        ge=0.0,
        le=1.5,
        description="largest natural-log scale factor sample() draws per axis, uniform in "
        "[-max_log_scale, max_log_scale] (0.2: each axis zoomed by 0.82 to 1.22)",
    )
    prior_std: float = Field(0.3, gt=0.0, description="standard deviation of the normal pose prior on each log-scale")

    @field_validator("max_log_scale")
    @classmethod
    def _finite(cls, value):
        if not math.isfinite(value):
            raise ValueError(f"max_log_scale must be a finite number, got {value}")
        return value


class AxisScaling(AffineGroup2D):
    """Axis-aligned scalings as homogeneous matrices ``[[e^a, 0, 0], [0, e^b, 0], [0, 0, 1]]``.

    The group is abelian and ``exp`` is the group exponential of ``diag(a, b, 0)``, so
    ``log`` is exact everywhere (the log of the diagonal). Not a similarity: the two axes
    scale independently, so a circle becomes an ellipse. ``identity``, ``compose``,
    ``inverse`` and ``act`` come from :class:`AffineGroup2D`, which handles any invertible
    linear part; ``distance`` is the group's own (no rotation to report).

    :param config: the validated :class:`AxisScalingConfig`.
    """

    name = "axis_scaling"
    dim = 2
    coordinate_names = ("log_sx", "log_sy")
    has_translation = False
    has_scale = False
    #: the pose error evaluation aligns poses by and reports
    primary_error = "axis_log_scale"

    def __init__(self, config: AxisScalingConfig):
        self.config = config

    def exp(self, tau: torch.Tensor) -> torch.Tensor:
        """``(N, 2)`` log-scales -> ``(N, 3, 3)`` diagonal matrices (differentiable)."""
        self.check_tau(tau)
        zero, one = torch.zeros_like(tau[:, 0]), torch.ones_like(tau[:, 0])
        sx, sy = torch.exp(tau[:, 0]), torch.exp(tau[:, 1])
        return torch.stack((sx, zero, zero, zero, sy, zero, zero, zero, one), dim=-1).view(-1, 3, 3)

    def log(self, g: torch.Tensor) -> torch.Tensor:
        """``(N, 3, 3)`` -> ``(N, 2)``: the logs of the two diagonal entries."""
        self.check_matrices(g)
        return torch.stack((torch.log(g[:, 0, 0]), torch.log(g[:, 1, 1])), dim=-1)

    def sample(self, n: int, generator: torch.Generator | None = None, *, dtype=None, device=None) -> torch.Tensor:
        """``(n, 2)`` log-scales, each uniform in ``[-max_log_scale, max_log_scale]``.

        :param n: how many.
        :param generator: a seeded :class:`torch.Generator` for reproducible draws.
        :param dtype: defaults to ``torch.get_default_dtype()``.
        :param device: defaults to the generator's device, else the CPU.
        """
        if device is None:
            device = generator.device if generator is not None else "cpu"
        unit = torch.rand(n, 2, generator=generator, dtype=dtype or torch.get_default_dtype(), device=device)
        return (2.0 * unit - 1.0) * self.config.max_log_scale

    def log_prior(self, tau: torch.Tensor) -> torch.Tensor:
        """``(N,)`` log density of ``N(0, prior_std^2 I)`` at ``tau``."""
        self.check_tau(tau)
        std = self.config.prior_std
        return -0.5 * (tau / std).square().sum(-1) - 2.0 * math.log(std) - math.log(2.0 * math.pi)

    def distance(self, g1: torch.Tensor, g2: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"axis_log_scale": ...}``: the Euclidean distance of the two ``(log_sx, log_sy)``
        pairs, ``(N,)`` (0.1 = one axis zoomed 10% more than in the other pose)."""
        self.check_matrices(g1, "g1")
        self.check_matrices(g2, "g2")
        return {"axis_log_scale": torch.linalg.vector_norm(self.log(g1) - self.log(g2), dim=-1)}
