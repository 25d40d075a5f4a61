"""geomstats as the reference for closed-form group code (tests and benchmarks only).

geomstats reads ``GEOMSTATS_BACKEND`` once, at its first import, and its pytorch backend
then calls ``torch.set_default_dtype(float64)`` for the whole process. Everything here
goes through :func:`import_geomstats` (from :mod:`mcvae_framework.geomstats_bridge`),
which sets the backend only for that import and puts torch's default dtype back; each
reference function runs geomstats inside :func:`float64_scope` (geomstats itself assumes
its float64 default) and returns plain float64 torch tensors.

The functions take and return torch tensors whatever the backend:

* :func:`so2_exp` / :func:`so2_log` -- ``SpecialOrthogonal(2)``;
* :func:`se2_exp` / :func:`se2_log` -- ``SpecialEuclidean(2)`` with its algebra basis
  ``[[0, -theta, u1], [theta, 0, u2], [0, 0, 0]]``;
* :func:`matrix_exp` / :func:`matrix_log` -- ``GeneralLinear``'s exponential and
  logarithm, the reference for groups geomstats does not ship (scale-rotation, Sim(2)),
  applied to :func:`planar_algebra_matrix`.

Never import this on a training path: geomstats' logarithms call scipy one matrix at a
time, and importing it costs seconds.
"""

from __future__ import annotations

import torch

# The guarded import lives in the core (evaluation uses geomstats too); re-exported here
# for the tests and benchmarks that import it from this module.
from ..geomstats_bridge import BACKENDS as _BACKENDS  # noqa: F401
from ..geomstats_bridge import float64_scope, import_geomstats
from ..geomstats_bridge import loaded_backend as _loaded_backend  # noqa: F401
from ..geomstats_bridge import modules as _geomstats
from ..geomstats_bridge import to_backend as _to_backend_array
from ..geomstats_bridge import to_torch as _to_torch

__all__ = [
    "float64_scope",
    "import_geomstats",
    "matrix_exp",
    "matrix_log",
    "planar_algebra_matrix",
    "se2_exp",
    "se2_log",
    "so2_exp",
    "so2_log",
]


def _to_backend(x: torch.Tensor, m):
    # with the pytorch backend the autograd graph is kept, so the reference can be timed
    # with its backward pass too
    return _to_backend_array(x, m)


def planar_algebra_matrix(theta: torch.Tensor, log_scale: torch.Tensor | None = None, u: torch.Tensor | None = None) -> torch.Tensor:
    """``(N, 3, 3)`` algebra matrices ``[[s, -theta, u1], [theta, s, u2], [0, 0, 0]]``.

    With ``s = 0`` this is geomstats' SE(2) basis; ``s`` adds the scaling generator, so the
    matrix exponential of the result is the reference for SO(2), SE(2), scale-rotation and
    Sim(2) alike.

    :param theta: ``(N,)`` angles (radians).
    :param log_scale: ``(N,)`` log-scales, or ``None`` for 0.
    :param u: ``(N, 2)`` translation coordinates, or ``None`` for 0.
    """
    z = torch.zeros_like(theta)
    s = z if log_scale is None else log_scale
    u1, u2 = (z, z) if u is None else (u[:, 0], u[:, 1])
    return torch.stack((s, -theta, u1, theta, s, u2, z, z, z), dim=-1).view(-1, 3, 3)


def so2_exp(theta: torch.Tensor) -> torch.Tensor:
    """``(N,)`` angles -> ``(N, 2, 2)`` rotations by ``SpecialOrthogonal(2).exp``."""
    m = _geomstats()
    with float64_scope():
        group = m.SpecialOrthogonal(2)
        algebra = group.lie_algebra.matrix_representation(_to_backend(theta.reshape(-1, 1), m))
        return _to_torch(group.exp(algebra))


def so2_log(rotations: torch.Tensor) -> torch.Tensor:
    """``(N, 2, 2)`` rotations -> ``(N,)`` angles by ``SpecialOrthogonal(2).log``."""
    m = _geomstats()
    with float64_scope():
        group = m.SpecialOrthogonal(2)
        algebra = group.log(_to_backend(rotations, m))
        return _to_torch(group.lie_algebra.basis_representation(algebra)).reshape(-1)


def se2_exp(tau: torch.Tensor) -> torch.Tensor:
    """``(N, 3)`` coordinates ``(theta, u1, u2)`` -> ``(N, 3, 3)`` by ``SpecialEuclidean(2).exp``."""
    m = _geomstats()
    with float64_scope():
        group = m.SpecialEuclidean(2)
        algebra = group.lie_algebra.matrix_representation(_to_backend(tau, m))
        return _to_torch(group.exp(algebra))


def se2_log(g: torch.Tensor) -> torch.Tensor:
    """``(N, 3, 3)`` rigid motions -> ``(N, 3)`` coordinates by ``SpecialEuclidean(2).log``
    (scipy's ``logm``, one matrix at a time; its branch near ``|theta| = pi`` may differ)."""
    m = _geomstats()
    with float64_scope():
        group = m.SpecialEuclidean(2)
        algebra = group.log(_to_backend(g, m))
        return _to_torch(group.lie_algebra.basis_representation(algebra))


def matrix_exp(algebra: torch.Tensor) -> torch.Tensor:
    """``(N, n, n)`` matrices -> their exponentials by ``GeneralLinear.exp``."""
    m = _geomstats()
    with float64_scope():
        return _to_torch(m.GeneralLinear.exp(_to_backend(algebra, m)))


def matrix_log(g: torch.Tensor) -> torch.Tensor:
    """``(N, n, n)`` invertible matrices -> principal logarithms by ``GeneralLinear.log``."""
    m = _geomstats()
    with float64_scope():
        return _to_torch(m.GeneralLinear.log(_to_backend(g, m)))
