"""geomstats as the reference for closed-form group code (tests and benchmarks only).

geomstats reads ``GEOMSTATS_BACKEND`` once, at its first import, and its pytorch backend
then calls ``torch.set_default_dtype(float64)`` for the whole process. Everything here
goes through :func:`import_geomstats`, which sets the backend only for that import and
puts torch's default dtype back; each reference function runs geomstats inside
:func:`float64_scope` (geomstats itself assumes its float64 default) and returns plain
float64 torch tensors.

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

import contextlib
import importlib
import os
import sys
import warnings
from types import SimpleNamespace

import torch

_BACKENDS = ("pytorch", "numpy")
_modules: SimpleNamespace | None = None


@contextlib.contextmanager
def float64_scope():
    """Run a block with torch's default dtype set to float64, then restore the previous one.

    Also silences two deprecation warnings that geomstats' pytorch backend triggers (the
    sparse-tensor constructor, numpy's ``__array__(copy=...)``): they are geomstats', not
    ours to fix.
    """
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*torch\.sparse\..*deprecated", category=UserWarning)
            warnings.filterwarnings("ignore", message=r"__array__ implementation", category=DeprecationWarning)
            yield
    finally:
        torch.set_default_dtype(previous)


def _loaded_backend() -> str | None:
    loaded = sys.modules.get("geomstats._backend")
    return getattr(loaded, "BACKEND_NAME", None) if loaded is not None else None


def import_geomstats(backend: str | None = None) -> SimpleNamespace:
    """Import geomstats with ``backend`` and leave torch's default dtype as it was.

    :param backend: ``"pytorch"`` or ``"numpy"``; by default the backend geomstats already
        has in this process, else ``$GEOMSTATS_BACKEND``, else ``"pytorch"``. geomstats
        fixes its backend at its first import in a process; asking for another one
        afterwards raises ``RuntimeError``.
    :returns: a namespace with ``gs`` (``geomstats.backend``), ``backend`` (its name),
        ``SpecialOrthogonal``, ``SpecialEuclidean`` and ``GeneralLinear``.
    """
    global _modules
    if backend is None:
        backend = _loaded_backend() or os.environ.get("GEOMSTATS_BACKEND") or "pytorch"
    if backend not in _BACKENDS:
        raise ValueError(f"geomstats backend must be one of {', '.join(_BACKENDS)}, got {backend!r}")
    if _modules is None:
        current = _loaded_backend()
        previous_env = os.environ.get("GEOMSTATS_BACKEND")
        previous_dtype = torch.get_default_dtype()
        try:
            if current is None:
                os.environ["GEOMSTATS_BACKEND"] = backend
            gs = importlib.import_module("geomstats.backend")
            name = importlib.import_module("geomstats._backend").BACKEND_NAME
            from geomstats.geometry.general_linear import GeneralLinear
            from geomstats.geometry.special_euclidean import SpecialEuclidean
            from geomstats.geometry.special_orthogonal import SpecialOrthogonal
        finally:
            torch.set_default_dtype(previous_dtype)
            if previous_env is None:
                os.environ.pop("GEOMSTATS_BACKEND", None)
            else:
                os.environ["GEOMSTATS_BACKEND"] = previous_env
        _modules = SimpleNamespace(
            gs=gs,
            backend=name,
            SpecialOrthogonal=SpecialOrthogonal,
            SpecialEuclidean=SpecialEuclidean,
            GeneralLinear=GeneralLinear,
        )
    if _modules.backend != backend:
        raise RuntimeError(
            f"geomstats is already imported with the {_modules.backend!r} backend in this process; "
            f"it cannot switch to {backend!r}. Run in a fresh process with GEOMSTATS_BACKEND={backend}."
        )
    return _modules


def _geomstats():
    """The geomstats modules with whichever backend is (or would be) loaded."""
    return _modules if _modules is not None else import_geomstats()


def _to_backend(x: torch.Tensor, m: SimpleNamespace):
    # with the pytorch backend the autograd graph is kept, so the reference can be timed
    # with its backward pass too
    x = x.to("cpu", torch.float64)
    return x if m.backend == "pytorch" else x.detach().numpy()


def _to_torch(y) -> torch.Tensor:
    return torch.as_tensor(y).to(torch.float64)


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
