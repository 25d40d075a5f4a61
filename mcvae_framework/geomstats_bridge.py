"""geomstats beside the closed-form groups: its guarded import, a group's geomstats space,
and the geomstats means that evaluation uses.

A group says which geomstats space its elements are points of through
:meth:`~mcvae_framework.interfaces.LieGroup.geomstats_space` (``None`` when it names
none). The framework, not the plugin, imports geomstats (through :func:`import_geomstats`)
and hands the group a namespace of geomstats classes to build its space from.

geomstats stays off the training path: it reads ``GEOMSTATS_BACKEND`` once, at its first
import, its pytorch backend then calls ``torch.set_default_dtype(float64)`` for the whole
process, and its logarithms call scipy's ``logm`` one matrix at a time. So:

* :func:`import_geomstats` sets the backend only for that import and puts torch's
  default dtype back; everything that runs geomstats code does so inside
  :func:`float64_scope` (geomstats assumes its float64 default) and converts its results
  back to plain float64 torch tensors;
* this module itself imports no geomstats: evaluation and prediction import it freely,
  and geomstats is imported (through :func:`import_geomstats`) only when its code runs.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import os
import sys
import warnings
from types import SimpleNamespace

import numpy as np
import torch

from .interfaces import LieGroup

BACKENDS = ("pytorch", "numpy")
_modules: SimpleNamespace | None = None


@contextlib.contextmanager
def float64_scope():
    """Run a block with torch's default dtype set to float64, then restore the previous one.

    Also silences three warnings that geomstats' backends trigger (the sparse-tensor
    constructor, numpy's ``__array__(copy=...)``, a maximum number of iterations reached
    by a mean that has converged to rounding): they are geomstats', not ours to fix.
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


def loaded_backend() -> str | None:
    """The backend geomstats was imported with in this process, or ``None``."""
    loaded = sys.modules.get("geomstats._backend")
    return getattr(loaded, "BACKEND_NAME", None) if loaded is not None else None


def import_geomstats(backend: str | None = None) -> SimpleNamespace:
    """Import geomstats with ``backend`` and leave torch's default dtype as it was.

    :param backend: ``"pytorch"`` or ``"numpy"``; by default the backend geomstats already
        has in this process, else ``$GEOMSTATS_BACKEND``, else ``"pytorch"``. geomstats
        fixes its backend at its first import in a process; asking for another one
        afterwards raises ``RuntimeError``.
    :returns: a namespace with ``gs`` (``geomstats.backend``), ``backend`` (its name),
        the spaces ``SpecialOrthogonal``, ``SpecialEuclidean``, ``GeneralLinear`` and
        ``MatrixLieGroup``, the estimators ``FrechetMean`` and ``ExponentialBarycenter``,
        and ``geomstats`` itself. This is the namespace a group's ``geomstats_space``
        receives.
    """
    global _modules
    if backend is None:
        backend = loaded_backend() or os.environ.get("GEOMSTATS_BACKEND") or "pytorch"
    if backend not in BACKENDS:
        raise ValueError(f"geomstats backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if _modules is None:
        current = loaded_backend()
        previous_env = os.environ.get("GEOMSTATS_BACKEND")
        previous_dtype = torch.get_default_dtype()
        try:
            if current is None:
                os.environ["GEOMSTATS_BACKEND"] = backend
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "Using pytorch backend"
                geomstats = importlib.import_module("geomstats")
                gs = importlib.import_module("geomstats.backend")
                name = importlib.import_module("geomstats._backend").BACKEND_NAME
                from geomstats.geometry.general_linear import GeneralLinear
                from geomstats.geometry.lie_group import MatrixLieGroup
                from geomstats.geometry.special_euclidean import SpecialEuclidean
                from geomstats.geometry.special_orthogonal import SpecialOrthogonal
                from geomstats.learning.exponential_barycenter import ExponentialBarycenter
                from geomstats.learning.frechet_mean import FrechetMean
        finally:
            torch.set_default_dtype(previous_dtype)
            if previous_env is None:
                os.environ.pop("GEOMSTATS_BACKEND", None)
            else:
                os.environ["GEOMSTATS_BACKEND"] = previous_env
        _modules = SimpleNamespace(
            geomstats=geomstats,
            gs=gs,
            backend=name,
            SpecialOrthogonal=SpecialOrthogonal,
            SpecialEuclidean=SpecialEuclidean,
            GeneralLinear=GeneralLinear,
            MatrixLieGroup=MatrixLieGroup,
            FrechetMean=FrechetMean,
            ExponentialBarycenter=ExponentialBarycenter,
        )
    if _modules.backend != backend:
        raise RuntimeError(
            f"geomstats is already imported with the {_modules.backend!r} backend in this process; "
            f"it cannot switch to {backend!r}. Run in a fresh process with GEOMSTATS_BACKEND={backend}."
        )
    return _modules


def modules() -> SimpleNamespace:
    """The geomstats namespace with whichever backend is (or would be) loaded."""
    return _modules if _modules is not None else import_geomstats()


def to_backend(x, m: SimpleNamespace | None = None):
    """A float64 CPU copy of ``x`` in the backend's array type (a torch tensor for the
    pytorch backend, keeping its autograd graph; a numpy array otherwise)."""
    m = m or modules()
    x = torch.as_tensor(x).to("cpu", torch.float64)
    return x if m.backend == "pytorch" else x.detach().numpy()


def to_torch(y) -> torch.Tensor:
    """A geomstats result as a float64 torch tensor."""
    return torch.as_tensor(y).to(torch.float64)


# ------------------------------------------------------------------ a group's space


def has_geomstats_space(group) -> bool:
    """Whether ``group`` overrides ``geomstats_space`` (answered without importing
    geomstats; the space itself may still be ``None``)."""
    method = getattr(type(group), "geomstats_space", None)
    return method is not None and method is not LieGroup.geomstats_space


def geomstats_space_of(group):
    """The geomstats space of ``group`` (see ``LieGroup.geomstats_space``), or ``None``
    when it names none. Imports geomstats on first use (with the dtype guard)."""
    if not has_geomstats_space(group):
        return None
    m = modules()
    with float64_scope():
        return group.geomstats_space(m)


def space_name(space) -> str:
    """A short readable name of a geomstats space, e.g. ``SpecialEuclidean(2)`` or
    ``GeneralLinear+(3)``."""
    name = type(space).__name__.lstrip("_")
    for suffix in ("Matrices", "Vectors"):
        if name.endswith(suffix) and name != suffix:
            name = name[: -len(suffix)]
    if getattr(space, "positive_det", False):
        name += "+"
    n = getattr(space, "n", None)
    return f"{name}({n})" if n is not None else name


def estimator_name(space) -> str:
    """``FrechetMean`` for a space with a metric, ``ExponentialBarycenter`` for a Lie
    group space without one (see :func:`space_mean`)."""
    return "FrechetMean" if getattr(space, "metric", None) is not None else "ExponentialBarycenter"


def describe(space) -> str:
    """What :func:`space_mean` computes on ``space``, in words, for reports."""
    metric = getattr(space, "metric", None)
    if metric is not None:
        return f"geomstats FrechetMean on {space_name(space)} with its {type(metric).__name__}"
    return f"geomstats ExponentialBarycenter (group exponential barycenter) on {space_name(space)}"


def space_mean(group, space, elements: torch.Tensor, start: torch.Tensor, *, max_iter: int = 16,
               epsilon: float = 1e-12) -> torch.Tensor:
    """The mean of ``elements`` computed by geomstats on ``space``.

    A space with a metric is averaged by ``FrechetMean`` with that metric (its gradient
    descent, from ``start``); a Lie group space without a metric (built with
    ``equip=False``) by ``ExponentialBarycenter``, the fixed point of
    ``m <- m exp(mean log(m^-1 h))`` computed with geomstats' own matrix exponential and
    logarithm.

    :param group: the group (for :meth:`geomstats_point` and its inverse).
    :param space: ``geomstats_space_of(group)``.
    :param elements: ``(N, 3, 3)`` group elements.
    :param start: ``(3, 3)`` the starting point (a good guess: the descent then takes a
        step or two).
    :returns: the ``(3, 3)`` mean as a float64 group element.
    """
    m = modules()
    with float64_scope():
        points = to_backend(group.geomstats_point(elements.double()), m)
        init = to_backend(group.geomstats_point(start.double()[None])[0], m)
        if getattr(space, "metric", None) is not None:
            estimator = m.FrechetMean(space)
        else:
            estimator = m.ExponentialBarycenter(space)
        optimizer = getattr(estimator, "optimizer", None)
        if optimizer is not None:
            optimizer.init_point = init
            optimizer.max_iter = max_iter
            optimizer.epsilon = epsilon
        # geomstats logs "maximum number of iterations reached" through the root logger
        # when a mean has converged to rounding; keep it out of the user's console
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            estimator.fit(points)
        finally:
            logging.disable(previous)
        mean = to_torch(estimator.estimate_)
    return group.from_geomstats_point(mean[None])[0].to(torch.float64)


def space_dispersion(group, space, elements: torch.Tensor, mean: torch.Tensor) -> float:
    """Root mean squared distance of ``elements`` from ``mean`` on ``space``: geomstats'
    metric distance where the space has a metric, else the Frobenius norm of geomstats'
    group logarithm ``log(mean^-1 h)``."""
    m = modules()
    with float64_scope():
        points = to_backend(group.geomstats_point(elements.double()), m)
        base = to_backend(group.geomstats_point(mean.double()[None])[0], m)
        metric = getattr(space, "metric", None)
        if metric is not None:
            squared = to_torch(metric.squared_dist(points, base))
        else:
            logs = to_torch(space.log(space.compose(space.inverse(base), points)))
            squared = (logs**2).flatten(1).sum(1)
    value = float(squared.mean().clamp_min(0).sqrt())
    return value if math.isfinite(value) else float("nan")


# ------------------------------------------------------------------ predicted poses


def pose_fields(group, tau: torch.Tensor, component: torch.Tensor | None = None) -> dict:
    """The pose arrays ``mcvae predict`` writes to ``.npz`` beside ``tau`` (no geomstats
    import needed):

    * ``pose_matrix`` ``(N, 3, 3)`` float64 -- the group element ``exp(tau)`` (with a
      discrete part: ``element(tau, component)``) as a matrix: for the planar groups the
      homogeneous matrix of the map ``p -> A p + t`` in normalised image coordinates, for
      a group of another :attr:`~mcvae_framework.interfaces.LieGroup.element_shape` its own
      matrices (``so3``: rotations of the volume's coordinates);
    * ``pose_geomstats`` -- the same poses as points of the group's geomstats space
      (``group.geomstats_point``: ``2 x 2`` rotations for ``SpecialOrthogonal(2)``,
      homogeneous matrices for ``SpecialEuclidean(2)`` and the ``GeneralLinear``
      subgroups), only for a group that names a geomstats space;
    * ``pose_group`` -- the group's config ``type`` (build the group, and its space with
      :func:`geomstats_space_of`, from it).
    """
    with torch.no_grad():
        g = group.element(torch.as_tensor(tau).double(), None if component is None else torch.as_tensor(component))
        out = {"pose_matrix": g.cpu().numpy()}
        if has_geomstats_space(group):
            out["pose_geomstats"] = group.geomstats_point(g).double().cpu().numpy()
    tag = getattr(getattr(group, "config", None), "type", None)
    if tag is not None:
        out["pose_group"] = np.asarray(str(tag))
    return out
