"""How the built-in groups' elements are points of geomstats spaces.

geomstats ships ``SpecialOrthogonal(2)`` (points: ``2 x 2`` rotations) and
``SpecialEuclidean(2)`` (points: ``3 x 3`` homogeneous rigid motions). The other built-in
groups are closed connected subgroups of ``GL+(n)``, the matrices of positive
determinant: the scale-rotations ``e^s R`` of ``GL+(2)``, and the similarities and
orientation-preserving affine maps of ``GL+(3)`` (homogeneous matrices). Their space is
``GeneralLinear(n, positive_det=True)`` built without a metric, so that evaluation
averages them by geomstats' ``ExponentialBarycenter`` (the group mean
``m = m exp(mean log(m^-1 h))``, which stays in the subgroup: the logarithms of nearby
subgroup elements lie in its Lie algebra).

geomstats itself is never imported here: the framework passes its classes in.
"""

from __future__ import annotations

import torch


class LinearBlockPoints:
    """Mixin: the geomstats points are the ``2 x 2`` linear blocks ``A`` of ``[[A, 0], [0, 1]]``
    (for groups without translations)."""

    def geomstats_point(self, g: torch.Tensor) -> torch.Tensor:
        """``(N, 3, 3)`` -> ``(N, 2, 2)``: the linear block."""
        return g[..., :2, :2]

    def from_geomstats_point(self, points: torch.Tensor) -> torch.Tensor:
        """``(N, 2, 2)`` -> ``(N, 3, 3)`` homogeneous matrices without translation."""
        points = torch.as_tensor(points)
        out = torch.zeros(*points.shape[:-2], 3, 3, dtype=points.dtype, device=points.device)
        out[..., :2, :2] = points
        out[..., 2, 2] = 1.0
        return out


def positive_general_linear(geomstats, n: int):
    """``GL+(n)`` without a metric: averaged by ``ExponentialBarycenter``."""
    return geomstats.GeneralLinear(n, positive_det=True, equip=False)
