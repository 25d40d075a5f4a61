"""``se2``: rigid motions of the plane, ``tau = (theta, u1, u2)``.

``exp`` is the true group exponential: the translation is ``V(theta) u``, not ``u``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .planar import PlanarPoseGroup
from .pose_config import ShiftFields


class SE2Config(ShiftFields):
    """Rotations about the image centre followed by translations."""

    type: Literal["se2"] = Field("se2", description="the group's tag")


class SpecialEuclidean2(PlanarPoseGroup):
    """SE(2) as ``(N, 3, 3)`` homogeneous matrices; ``tau = (theta, u1, u2)``."""

    name = "se2"
    dim = 3
    coordinate_names = ("theta", "u1", "u2")
    has_translation = True
    has_scale = False

    def geomstats_space(self, geomstats):
        """geomstats' ``SpecialEuclidean(2)`` (homogeneous ``3 x 3`` points) with its
        canonical left-invariant metric, whose geodesics are those of SO(2) x R^2."""
        return geomstats.SpecialEuclidean(2)


def make_se2(config: SE2Config) -> SpecialEuclidean2:
    """Factory registered for the ``se2`` tag."""
    return SpecialEuclidean2(config)
