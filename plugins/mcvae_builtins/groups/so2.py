"""``so2``: rotations of the plane, ``tau = (theta,)``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .geomstats_spaces import LinearBlockPoints
from .planar import PlanarPoseGroup
from .pose_config import PoseBase


class SO2Config(PoseBase):
    """Rotations about the image centre."""

    type: Literal["so2"] = Field("so2", description="the group's tag")


class SpecialOrthogonal2(LinearBlockPoints, PlanarPoseGroup):
    """SO(2) as ``(N, 3, 3)`` homogeneous rotation matrices; ``tau = theta`` (radians)."""

    name = "so2"
    dim = 1
    coordinate_names = ("theta",)
    has_translation = False
    has_scale = False

    def geomstats_space(self, geomstats):
        """geomstats' ``SpecialOrthogonal(2)`` with its bi-invariant metric; its points are
        the ``2 x 2`` rotation blocks."""
        return geomstats.SpecialOrthogonal(2)


def make_so2(config: SO2Config) -> SpecialOrthogonal2:
    """Factory registered for the ``so2`` tag."""
    return SpecialOrthogonal2(config)
