"""Config fields shared by the built-in groups: the pose distribution and the pose prior.

The pose *distribution* (``angle_deg``, ``shift``, ``log_scale``) is what ``sample`` draws
from: datasets use it to move images, the loss uses it for random invariance actions.
The pose *prior* (``prior`` and the ``prior_*_std`` fields) is ``p(tau)`` in the ELBO.
Each group's config class mixes in the blocks it needs.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator

from mcvae_framework import ComponentConfig


def _finite_pair(value, field: str, example: str) -> tuple[float, float]:
    lo, hi = value
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{field} must be two finite numbers [lo, hi], got {list(value)}; e.g. {example}")
    if lo > hi:
        raise ValueError(f"{field} range {list(value)} is reversed (lo > hi); write it as [{hi}, {lo}]")
    return lo, hi


class PoseBase(ComponentConfig):
    """Fields every built-in group has: its tag, the angle range and the prior."""

    type: str = Field(..., description="the group's tag")
    angle_deg: tuple[float, float] = Field(
        (-180.0, 180.0),
        description="rotation angles drawn by `sample`, uniform in [lo, hi] degrees, within "
        "[-180, 180] (default: the full circle)",
    )
    prior: Literal["normal", "uniform"] = Field(
        "normal",
        description="pose prior p(tau) of the ELBO. normal: independent zero-mean normals on "
        "every coordinate of tau, with the prior_*_std widths. uniform: flat over the sampling "
        "ranges (angle_deg, +-2*shift, log_scale) with normal shoulders of the prior_*_std "
        "widths outside them, so that log p stays finite and differentiable everywhere. Both "
        "are proper densities on the real line (the angle is not wrapped), which keeps the "
        "pose KL estimate -log_prior(tau) - entropy a true KL",
    )
    prior_angle_std_deg: float = Field(
        60.0, gt=0, description="width (degrees) of the angle prior: its std (normal) or shoulder (uniform)"
    )

    @field_validator("angle_deg")
    @classmethod
    def _check_angle_range(cls, value):
        lo, hi = _finite_pair(value, "angle_deg", "[-90, 90]")
        if lo < -180 or hi > 180:
            raise ValueError(
                f"angle_deg {list(value)} is outside [-180, 180]: give the range of rotation "
                "angles in degrees, e.g. [-90, 90] (the full circle is [-180, 180])"
            )
        return lo, hi


class ShiftFields(PoseBase):
    """Translation range and prior width, for groups with translations."""

    shift: float = Field(
        0.1,
        description="largest translation drawn by `sample` along each axis, as a fraction of the "
        "image side (0.25 = a quarter of the side, i.e. 0.5 in normalised units); "
        "uniform in [-shift, shift] per axis, between 0 and 1",
    )
    prior_shift_std: float = Field(
        0.25,
        gt=0,
        description="width of the translation prior on u1, u2, as a fraction of the image side "
        "(0.25 = 0.5 in normalised units): std (normal) or shoulder (uniform)",
    )

    @field_validator("shift")
    @classmethod
    def _check_shift(cls, value):
        if not math.isfinite(value) or value < 0:
            raise ValueError(
                f"shift must be >= 0 (the largest translation as a fraction of the image side), "
                f"got {value}; e.g. 0.25 for up to a quarter of the side"
            )
        if value > 1:
            raise ValueError(
                f"shift {value} moves the content further than the image side (at most 1); "
                "use a value in [0, 1], e.g. 0.25, and a larger canvas if needed"
            )
        return value


class ScaleFields(PoseBase):
    """Log-scale range and prior width, for groups with isotropic scaling."""

    log_scale: tuple[float, float] = Field(
        (-0.25, 0.25),
        description="natural-log scale factors drawn by `sample`, uniform in [lo, hi] "
        "(default [-0.25, 0.25]: scales 0.78 to 1.28)",
    )
    prior_log_scale_std: float = Field(
        0.5, gt=0, description="width of the log-scale prior: std (normal) or shoulder (uniform)"
    )

    @field_validator("log_scale")
    @classmethod
    def _check_log_scale(cls, value):
        lo, hi = _finite_pair(value, "log_scale", "[-0.25, 0.25]")
        if max(abs(lo), abs(hi)) > 5:
            raise ValueError(
                f"log_scale {list(value)} asks for scale factors beyond e^5 = 148; the range is "
                "in natural-log units, e.g. [-0.25, 0.25] for scales 0.78 to 1.28"
            )
        return lo, hi
