"""The closed form behind the translation part of the planar exponentials.

For the algebra element with rotation ``theta``, log-scale ``s`` and translation
coordinates ``u``, the group exponential's translation is ``t = V u`` with
``V = integral_0^1 exp(r (s I + theta J)) dr``. Writing 2-vectors as complex numbers
(``u = u1 + i u2``) and ``w = s + i theta``, the linear part is ``e^w`` and ``V`` is
multiplication by ``phi(w) = (e^w - 1) / w``; for rigid motions (``s = 0``) that is
``sin(theta)/theta + i (1 - cos(theta))/theta``. The logarithm divides by the same
``phi`` (never zero on the principal branch ``|theta| <= pi``).

Complex tensors keep this to a handful of fused operations (the exponential is on the
training hot path, where the number of kernel launches matters more than their size).
Near ``w = 0`` the quotient is 0/0: below a dtype-dependent radius its Taylor series is
used instead, and the exact branch sees a harmless stand-in argument there (the "double
where"), so values *and gradients* are finite and accurate at 0.
"""

from __future__ import annotations

import math

import torch

# Below these radii the Taylor series through w^4 is used (error < |w|^5 / 6!, below
# rounding there); above them the exact quotient's gradient, whose relative error grows
# like eps / |w|, is accurate to about 1e-6 (float32) or 1e-13 (float64).
_SERIES_RADIUS = {torch.complex128: 1e-3}
_SERIES_RADIUS_LOW_PRECISION = 0.1

# phi(w) = sum_k w^k / (k + 1)!, coefficients for k = 0..4
_PHI_COEFFS = [1.0 / math.factorial(k + 1) for k in range(5)]

#: dtypes computed as they are; others (float16, bfloat16) go through float32.
NATIVE_DTYPES = (torch.float32, torch.float64)


def series_radius(dtype: torch.dtype) -> float:
    """The ``|w|`` below which the Taylor branch is used, for a complex ``dtype``."""
    return _SERIES_RADIUS.get(dtype, _SERIES_RADIUS_LOW_PRECISION)


def phi(w: torch.Tensor) -> torch.Tensor:
    """``(e^w - 1) / w`` for a complex tensor ``w``, series-safe at 0 (value 1)."""
    small = w.abs() < series_radius(w.dtype)
    safe = torch.where(small, torch.ones_like(w), w)
    exact = torch.expm1(safe) / safe
    c0, c1, c2, c3, c4 = _PHI_COEFFS
    series = ((((w * c4 + c3) * w + c2) * w + c1) * w) + c0
    return torch.where(small, series, exact)


def flat_top_log_prior(tau: torch.Tensor, bounds, cache: dict) -> torch.Tensor:
    """``(N,)`` log density, per column of ``tau`` a flat top on ``[lo, hi]`` with normal
    shoulders of width ``w``: ``exp(-d^2 / (2 w^2)) / (hi - lo + sqrt(2 pi) w)``, ``d`` the
    distance outside ``[lo, hi]`` (a normal when ``lo = hi = 0``).

    :param bounds: callable returning ``(lo, hi, w)`` per column.
    :param cache: the group's per ``(dtype, device)`` cache of the bound tensors.
    """
    key = (tau.dtype, tau.device)
    if key not in cache:
        lo, hi, width = (tau.new_tensor(v) for v in zip(*bounds()))
        log_norm = torch.log(hi - lo + math.sqrt(2 * math.pi) * width).sum()
        cache[key] = (lo, hi, width, log_norm)
    lo, hi, width, log_norm = cache[key]
    outside = torch.relu(lo - tau) + torch.relu(tau - hi)
    return -0.5 * ((outside / width) ** 2).sum(dim=-1) - log_norm
