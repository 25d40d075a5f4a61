"""``affine2``: the orientation-preserving affine maps of the plane, Aff+(2), 6 coordinates.

The chart
---------
``tau = (theta, log_scale, stretch, stretch_diag, t1, t2)`` are coordinates of the
*second kind*: the element is a product of one-parameter subgroups,

    g = T(t) . R(theta) . e^log_scale . exp(P),   P = [[stretch, stretch_diag],
                                                       [stretch_diag, -stretch]],

i.e. the map ``p -> A p + t`` with ``A = e^s R(theta) exp(P)``. Read from the right: the
content is first stretched (``exp(P)`` is symmetric positive definite with determinant
1: it scales by ``e^r`` along one direction and by ``e^-r`` across it, with
``r = sqrt(stretch^2 + stretch_diag^2)``; ``stretch`` alone scales ``x`` by ``e^stretch``
and ``y`` by ``e^-stretch``, ``stretch_diag`` alone does the same along the diagonals),
then zoomed by ``e^s``, rotated by ``theta``, and shifted by ``t`` (normalised units, like
the other groups' translations). Any shear is a rotation times a stretch, so every
orientation-preserving affine map has exactly one set of coordinates with ``theta`` in
``(-pi, pi]``: ``A = R S`` is the polar decomposition (``S = e^s exp(P)`` symmetric
positive definite), which ``log`` computes in closed form -- ``theta`` is the polar
angle, ``s = log det A / 2``, ``P`` the logarithm of ``S / e^s`` and ``t`` the last
column. Unlike the Lie exponential (which misses every map whose linear part has two
distinct negative eigenvalues, e.g. a half turn combined with any stretch), this chart
covers the whole group, so ``log`` is defined and exact everywhere; the price is that
``exp(-tau)`` is not ``exp(tau)^-1`` (``exponential_coordinates = False``). Each factor
is the matrix exponential of its own algebra element, which the tests check against
:func:`torch.linalg.matrix_exp`.

``exp(P) = cosh(r) I + sinh(r)/r P`` and ``log`` uses ``asinh(m)/m`` (``m`` the size of
the traceless part of ``S / e^s``); both are even functions, evaluated by their Taylor
series near 0 (with a harmless stand-in argument in the exact branch, the "double
where"), so values and gradients are finite at the identity.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, field_validator

from mcvae_framework.interfaces import AffineGroup2D

from .closed_forms import NATIVE_DTYPES, flat_top_log_prior
from .geomstats_spaces import positive_general_linear
from .pose_config import ScaleFields, ShiftFields, _finite_pair

# Below these squared radii the Taylor series through r^4 is used (next term < r^6/5040).
_SERIES_R2 = {torch.float64: 1e-4, torch.float32: 1e-2}


def _series_radius2(dtype) -> float:
    return _SERIES_R2.get(dtype, 1e-2)


def _cosh_sinhc(r2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``cosh(r)`` and ``sinh(r)/r`` as functions of ``r^2 >= 0``, series-safe at 0."""
    small = r2 < _series_radius2(r2.dtype)
    r = torch.sqrt(torch.where(small, torch.ones_like(r2), r2))
    cosh = torch.where(small, 1 + r2 / 2 + r2 * r2 / 24, torch.cosh(r))
    sinhc = torch.where(small, 1 + r2 / 6 + r2 * r2 / 120, torch.sinh(r) / r)
    return cosh, sinhc


def _asinhc(m2: torch.Tensor) -> torch.Tensor:
    """``asinh(m)/m`` as a function of ``m^2 >= 0``, series-safe at 0."""
    small = m2 < _series_radius2(m2.dtype)
    m = torch.sqrt(torch.where(small, torch.ones_like(m2), m2))
    return torch.where(small, 1 - m2 / 6 + 3 * m2 * m2 / 40, torch.asinh(m) / m)


def _check_stretch(value, field: str):
    lo, hi = _finite_pair(value, field, "[-0.2, 0.2]")
    if max(abs(lo), abs(hi)) > 2:
        raise ValueError(
            f"{field} {list(value)} stretches by more than e^2 = 7.4 along one axis (and squeezes "
            "as much across it); the range is a natural log, e.g. [-0.2, 0.2] for factors 0.82 to 1.22"
        )
    return lo, hi


class Affine2Config(ShiftFields, ScaleFields):
    """Orientation-preserving affine maps: a stretch, a zoom, a rotation, then a shift.

    Every coordinate of the pose distribution has its own range (``angle_deg``,
    ``log_scale``, ``stretch``, ``stretch_diag``, ``shift``), and the pose prior its own
    width."""

    type: Literal["affine2"] = Field("affine2", description="the group's tag")
    stretch: tuple[float, float] = Field(
        (-0.2, 0.2),
        description="log-stretch along the image axes drawn by `sample`, uniform in [lo, hi]: "
        "x is scaled by e^stretch and y by e^-stretch (area kept), before the zoom and rotation",
    )
    stretch_diag: tuple[float, float] = Field(
        (-0.2, 0.2),
        description="log-stretch along the diagonals drawn by `sample`, uniform in [lo, hi]: "
        "the direction y = x is scaled by e^stretch_diag and y = -x by its inverse (a stretch "
        "along the diagonals is a shear up to a rotation)",
    )
    prior_stretch_std: float = Field(
        0.3, gt=0, description="width of the prior on stretch and stretch_diag: std (normal) or shoulder (uniform)"
    )

    @field_validator("stretch")
    @classmethod
    def _check_stretch(cls, value):
        return _check_stretch(value, "stretch")

    @field_validator("stretch_diag")
    @classmethod
    def _check_stretch_diag(cls, value):
        return _check_stretch(value, "stretch_diag")


class Affine2(AffineGroup2D):
    """Aff+(2) as ``(N, 3, 3)`` matrices ``[[e^s R(theta) exp(P), t], [0, 1]]``;
    ``tau = (theta, log_scale, stretch, stretch_diag, t1, t2)`` (see the module docstring).

    :param config: the validated :class:`Affine2Config`.
    """

    name = "affine2"
    dim = 6
    coordinate_names = ("theta", "log_scale", "stretch", "stretch_diag", "t1", "t2")
    has_translation = True
    has_scale = True
    exponential_coordinates = False

    def __init__(self, config: Affine2Config):
        self.config = config
        self._prior_cache: dict = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    # ------------------------------------------------------------ exp / log

    def exp(self, tau: torch.Tensor) -> torch.Tensor:
        """``(N, 6)`` coordinates -> ``(N, 3, 3)`` matrices ``T(t) R(theta) e^s exp(P)``."""
        self.check_tau(tau)
        if tau.dtype not in NATIVE_DTYPES:
            return self.exp(tau.float()).to(tau.dtype)
        theta, log_scale, c, k, t1, t2 = tau.unbind(-1)
        cosh, sinhc = _cosh_sinhc(c * c + k * k)
        zoom = torch.exp(log_scale)
        s00, s01, s11 = zoom * (cosh + sinhc * c), zoom * sinhc * k, zoom * (cosh - sinhc * c)
        cos, sin = torch.cos(theta), torch.sin(theta)
        zeros, ones = torch.zeros_like(theta), torch.ones_like(theta)
        entries = (
            cos * s00 - sin * s01, cos * s01 - sin * s11, t1,
            sin * s00 + cos * s01, sin * s01 + cos * s11, t2,
            zeros, zeros, ones,
        )
        return torch.stack(entries, dim=-1).view(-1, 3, 3)

    def _polar(self, g: torch.Tensor):
        """``(theta, log_scale, stretch, stretch_diag)`` of the linear part (polar decomposition)."""
        theta = self.rotation_angle(g)
        cos, sin = torch.cos(theta), torch.sin(theta)
        a00, a01, a10, a11 = g[:, 0, 0], g[:, 0, 1], g[:, 1, 0], g[:, 1, 1]
        # S = R(-theta) A, symmetric positive definite (symmetrised against rounding)
        s00 = cos * a00 + sin * a10
        s11 = -sin * a01 + cos * a11
        s01 = 0.5 * ((cos * a01 + sin * a11) + (-sin * a00 + cos * a10))
        log_scale = self.log_scale_of(g)
        unit = torch.exp(-log_scale)
        half_diff, off = 0.5 * (s00 - s11) * unit, s01 * unit  # traceless part of S / e^s
        factor = _asinhc(half_diff * half_diff + off * off)
        return theta, log_scale, half_diff * factor, off * factor

    def log(self, g: torch.Tensor) -> torch.Tensor:
        """``(N, 3, 3)`` matrices -> ``(N, 6)`` coordinates, ``theta`` in ``(-pi, pi]``.

        Exact for every orientation-preserving affine map (determinant > 0); a matrix with
        a negative determinant is not in the group (its ``log_scale`` is NaN).
        """
        self.check_matrices(g)
        if g.dtype not in NATIVE_DTYPES:
            return self.log(g.float()).to(g.dtype)
        theta, log_scale, c, k = self._polar(g)
        return torch.stack((theta, log_scale, c, k, g[:, 0, 2], g[:, 1, 2]), dim=-1)

    # ------------------------------------------------------------ pose distribution

    def _ranges(self) -> list[tuple[float, float]]:
        cfg = self.config
        reach = 2.0 * cfg.shift  # a fraction of the side is twice that in normalised units
        return [
            tuple(math.radians(a) for a in cfg.angle_deg),
            tuple(cfg.log_scale),
            tuple(cfg.stretch),
            tuple(cfg.stretch_diag),
            (-reach, reach),
            (-reach, reach),
        ]

    def sample(self, n: int, generator: torch.Generator | None = None, *, dtype=None, device=None) -> torch.Tensor:
        """``(n, 6)`` coordinates, each uniform in its configured range: ``angle_deg``,
        ``log_scale``, ``stretch``, ``stretch_diag``, and the translation ``t`` in
        ``[-2 shift, 2 shift]^2`` normalised units (``shift`` is a fraction of the side)."""
        dtype = dtype or torch.get_default_dtype()
        if dtype not in NATIVE_DTYPES:
            return self.sample(n, generator, dtype=torch.float32, device=device).to(dtype)
        if device is None:
            device = generator.device if generator is not None else torch.device("cpu")
        lo, hi = (torch.tensor(v, dtype=dtype, device=device) for v in zip(*self._ranges()))
        uniform = torch.rand(n, self.dim, generator=generator, dtype=dtype, device=device)
        return lo + (hi - lo) * uniform

    def _prior_bounds(self) -> list[tuple[float, float, float]]:
        """``(lo, hi, width)`` per column: flat on ``[lo, hi]``, normal shoulders of ``width``."""
        cfg = self.config
        widths = [
            math.radians(cfg.prior_angle_std_deg),
            cfg.prior_log_scale_std,
            cfg.prior_stretch_std,
            cfg.prior_stretch_std,
            2.0 * cfg.prior_shift_std,
            2.0 * cfg.prior_shift_std,
        ]
        ranges = self._ranges() if cfg.prior == "uniform" else [(0.0, 0.0)] * self.dim
        return [(lo, hi, w) for (lo, hi), w in zip(ranges, widths)]

    def log_prior(self, tau: torch.Tensor) -> torch.Tensor:
        """``(N,)`` log density of the pose prior: per coordinate
        ``exp(-d^2 / (2 w^2)) / (hi - lo + sqrt(2 pi) w)`` with ``d`` the distance outside
        ``[lo, hi]`` -- a normal (``prior: normal``, ``lo = hi = 0``) or a flat top over the
        sampling range with normal shoulders (``prior: uniform``)."""
        self.check_tau(tau)
        return flat_top_log_prior(tau, self._prior_bounds, self._prior_cache)

    # ------------------------------------------------------------ errors and geomstats

    def distance(self, g1: torch.Tensor, g2: torch.Tensor) -> dict[str, torch.Tensor]:
        """``rotation_deg`` (polar angle), ``translation`` and ``log_scale`` as for every
        planar group, plus ``stretch``: the Euclidean distance of the two
        ``(stretch, stretch_diag)`` pairs (the log-Euclidean distance of the unit-determinant
        stretches ``exp(P)``, ``|P1 - P2|_F / sqrt(2)``)."""
        out = super().distance(g1, g2)
        _, _, c1, k1 = self._polar(g1)
        _, _, c2, k2 = self._polar(g2)
        out["stretch"] = torch.sqrt((c1 - c2) ** 2 + (k1 - k2) ** 2)
        return out

    def geomstats_space(self, geomstats):
        """A group geomstats does not ship: homogeneous ``3 x 3`` matrices in
        ``GeneralLinear(3, positive_det=True)``, without a metric (averaged by
        ``ExponentialBarycenter``, with geomstats' own matrix exponential and logarithm)."""
        return positive_general_linear(geomstats, 3)


def make_affine2(config: Affine2Config) -> Affine2:
    """Factory registered for the ``affine2`` tag."""
    return Affine2(config)
