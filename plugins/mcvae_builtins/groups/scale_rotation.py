"""``scale_rotation``: rotations with isotropic scaling, R+ x SO(2), ``tau = (theta, log_scale)``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .geomstats_spaces import LinearBlockPoints, positive_general_linear
from .planar import PlanarPoseGroup
from .pose_config import ScaleFields


class ScaleRotationConfig(ScaleFields):
    """Rotations and zooms about the image centre."""

    type: Literal["scale_rotation"] = Field("scale_rotation", description="the group's tag")


class ScaleRotation2(LinearBlockPoints, PlanarPoseGroup):
    """R+ x SO(2) as ``(N, 3, 3)`` matrices ``e^s R(theta)``; ``tau = (theta, log_scale)``."""

    name = "scale_rotation"
    dim = 2
    coordinate_names = ("theta", "log_scale")
    has_translation = False
    has_scale = True

    def geomstats_space(self, geomstats):
        """A subgroup geomstats does not ship: the ``2 x 2`` blocks ``e^s R`` in
        ``GeneralLinear(2, positive_det=True)``, without a metric (averaged by
        ``ExponentialBarycenter``)."""
        return positive_general_linear(geomstats, 2)


def make_scale_rotation(config: ScaleRotationConfig) -> ScaleRotation2:
    """Factory registered for the ``scale_rotation`` tag."""
    return ScaleRotation2(config)
