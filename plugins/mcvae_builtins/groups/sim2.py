"""``sim2``: similarities of the plane, ``tau = (theta, log_scale, u1, u2)``.

``exp`` is the true exponential of the similarity algebra ``[[s, -theta, u1],
[theta, s, u2], [0, 0, 0]]``: the translation is ``V(theta, s) u`` with
``V = (e^w - 1) / w``, ``w = s + i theta`` (see :mod:`.closed_forms`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .geomstats_spaces import positive_general_linear
from .planar import PlanarPoseGroup
from .pose_config import ScaleFields, ShiftFields


class Sim2Config(ShiftFields, ScaleFields):
    """Rotations and zooms about the image centre followed by translations."""

    type: Literal["sim2"] = Field("sim2", description="the group's tag")


class Similarity2(PlanarPoseGroup):
    """Sim(2) as ``(N, 3, 3)`` matrices ``[[e^s R, t], [0, 1]]``; ``tau = (theta, log_scale, u1, u2)``."""

    name = "sim2"
    dim = 4
    coordinate_names = ("theta", "log_scale", "u1", "u2")
    has_translation = True
    has_scale = True

    def geomstats_space(self, geomstats):
        """A subgroup geomstats does not ship: homogeneous ``3 x 3`` similarities in
        ``GeneralLinear(3, positive_det=True)``, without a metric (averaged by
        ``ExponentialBarycenter``)."""
        return positive_general_linear(geomstats, 3)


def make_sim2(config: Sim2Config) -> Similarity2:
    """Factory registered for the ``sim2`` tag."""
    return Similarity2(config)
