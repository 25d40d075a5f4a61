"""Closed forms for rotations of 3-D space: the exponential and logarithm in axis-angle
coordinates, the Haar-uniform pose distribution, its prior density, and a near-uniform
grid of rotations.

``tau`` is the rotation vector (axis times angle, radians). Each formula is written so
that values *and gradients* stay finite at the identity (series in ``theta^2`` below a
small radius, the "double where": the exact branch sees a harmless stand-in there) and
the logarithm stays accurate near a half turn (the axis is read from the symmetric part
of the matrix there, where the antisymmetric part vanishes).
"""

from __future__ import annotations

import math

import torch

#: below this theta^2 the series are used (their error is below float64 rounding there).
_SMALL = 1e-6
#: above this cos(theta) the antisymmetric part gives the axis; below, the symmetric part.
_NEAR_HALF_TURN = -0.95


def hat(v: torch.Tensor) -> torch.Tensor:
    """``(N, 3)`` -> ``(N, 3, 3)`` skew matrices ``[v]_x`` (``[v]_x w = v x w``)."""
    zero = torch.zeros_like(v[:, 0])
    x, y, z = v.unbind(-1)
    return torch.stack((zero, -z, y, z, zero, -x, -y, x, zero), dim=-1).view(-1, 3, 3)


def vee(m: torch.Tensor) -> torch.Tensor:
    """``(N, 3, 3)`` -> ``(N, 3)``: the vector of the antisymmetric part ``(m - m^T) / 2``."""
    return 0.5 * torch.stack((m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] - m[:, 0, 1]), dim=-1)


def exp_so3(tau: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula ``I + A [tau]_x + B [tau]_x^2`` with ``A = sin(t)/t``,
    ``B = (1 - cos t)/t^2``, ``t = |tau|``."""
    t2 = (tau * tau).sum(-1)
    small = t2 < _SMALL
    safe = torch.where(small, torch.ones_like(t2), t2)
    t = safe.sqrt()
    a = torch.where(small, 1 - t2 / 6 + t2 * t2 / 120, torch.sin(t) / t)
    b = torch.where(small, 0.5 - t2 / 24 + t2 * t2 / 720, (1 - torch.cos(t)) / safe)
    k = hat(tau)
    eye = torch.eye(3, dtype=tau.dtype, device=tau.device)
    return eye + a[:, None, None] * k + b[:, None, None] * (k @ k)


def log_so3(r: torch.Tensor) -> torch.Tensor:
    """``(N, 3, 3)`` rotations -> ``(N, 3)`` rotation vectors with angles in ``[0, pi]``."""
    v = vee(r)  # sin(theta) * axis
    cos = ((r[:, 0, 0] + r[:, 1, 1] + r[:, 2, 2] - 1) / 2).clamp(-1.0, 1.0)
    s2 = (v * v).sum(-1)
    near_half = cos < _NEAR_HALF_TURN
    small = (s2 < _SMALL) & ~near_half
    positive = s2 > 0
    s = torch.where(positive, s2, torch.ones_like(s2)).sqrt()
    theta = torch.where(positive, torch.atan2(s, cos), torch.where(cos > 0, 0.0, math.pi).to(r.dtype))
    # theta / sin(theta) = 1 + s^2/6 + 3 s^4/40 + ... near the identity (s = sin theta)
    factor = torch.where(small, 1 + s2 / 6 + 3 * s2 * s2 / 40, theta / torch.where(small, torch.ones_like(s), s))
    generic = factor[:, None] * v
    # Near a half turn: (R + R^T)/2 = cos I + (1 - cos) a a^T; its largest diagonal gives a.
    eye = torch.eye(3, dtype=r.dtype, device=r.device)
    outer = 0.5 * (r + r.transpose(1, 2)) - cos[:, None, None] * eye
    outer = outer / torch.where(near_half, 1 - cos, torch.ones_like(cos))[:, None, None]
    column = outer.diagonal(dim1=1, dim2=2).argmax(-1)
    picked = outer.gather(2, column.view(-1, 1, 1).expand(-1, 3, 1)).squeeze(-1)
    diag = picked.gather(1, column.view(-1, 1)).squeeze(-1)
    axis = picked / torch.where(near_half, diag, torch.ones_like(diag)).clamp_min(1e-12).sqrt()[:, None]
    sign = torch.where((axis * v).sum(-1) < 0, -1.0, 1.0).to(r.dtype)
    return torch.where(near_half[:, None], (sign * theta)[:, None] * axis, generic)


def rotation_angle(r: torch.Tensor) -> torch.Tensor:
    """``(N,)`` angle in ``[0, pi]`` of rotations ``(N, 3, 3)`` (stable at 0 and at pi)."""
    cos = (r[:, 0, 0] + r[:, 1, 1] + r[:, 2, 2] - 1) / 2
    sin = torch.linalg.vector_norm(vee(r), dim=-1)
    return torch.atan2(sin, cos)


def sample_rotation_vectors(n: int, max_angle: float, generator, dtype, device) -> torch.Tensor:
    """``(n, 3)`` rotation vectors of Haar-uniform rotations with angle at most
    ``max_angle`` (radians): a uniform axis, and an angle of density ``(1 - cos t)``
    on ``[0, max_angle]`` (the Haar measure in axis-angle form), drawn by inverting its
    distribution function ``(t - sin t) / (m - sin m)`` by bisection."""
    axis = torch.randn(n, 3, generator=generator, dtype=torch.float64, device=device)
    axis = axis / torch.linalg.vector_norm(axis, dim=-1, keepdim=True).clamp_min(1e-12)
    u = torch.rand(n, generator=generator, dtype=torch.float64, device=device)
    target = u * (max_angle - math.sin(max_angle))
    lo, hi = torch.zeros_like(u), torch.full_like(u, max_angle)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        below = (mid - torch.sin(mid)) < target
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return (axis * (0.5 * (lo + hi))[:, None]).to(dtype)


def haar_log_density(tau: torch.Tensor, reach: float, shoulder: float) -> torch.Tensor:
    """``(N,)`` log density on all of R^3 of the Haar-uniform prior in rotation-vector
    coordinates: proportional to ``(1 - cos t) / t^2`` (``t = |tau|``) up to ``t = reach``,
    then that value times a normal shoulder ``exp(-(t - reach)^2 / (2 shoulder^2))``, so
    that it is proper, continuous and differentiable everywhere (the posterior on ``tau``
    is a Gaussian on R^3, not on the group). Normalised in closed form."""
    t2 = (tau * tau).sum(-1)
    small = t2 < _SMALL
    t = torch.where(small, torch.ones_like(t2), t2).sqrt()
    inside = torch.where(small, 0.5 - t2 / 24 + t2 * t2 / 720, (1 - torch.cos(t)) / torch.where(small, 1.0, t2))
    edge = (1 - math.cos(reach)) / reach**2
    outside_t = torch.where(small, torch.zeros_like(t2), t)
    log_density = torch.where(
        outside_t > reach,
        math.log(edge) - (outside_t - reach) ** 2 / (2 * shoulder**2),
        torch.log(inside.clamp_min(1e-300)),
    )
    root = math.sqrt(math.pi / 2)
    tail = reach**2 * shoulder * root + 2 * reach * shoulder**2 + shoulder**3 * root
    normaliser = 4 * math.pi * ((reach - math.sin(reach)) + edge * tail)
    return log_density - math.log(normaliser)


def quaternion_matrices(q: torch.Tensor) -> torch.Tensor:
    """``(N, 4)`` unit quaternions ``(w, x, y, z)`` -> ``(N, 3, 3)`` rotations."""
    w, x, y, z = q.unbind(-1)
    return torch.stack((
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ), dim=-1).view(-1, 3, 3)


def uniform_rotation_grid(count: int) -> torch.Tensor:
    """``(count, 4)`` unit quaternions spread near-uniformly over SO(3): the super-Fibonacci
    spiral (Alexa, CVPR 2022), deterministic, for any count."""
    phi = math.sqrt(2.0)
    psi = 1.533751168755204288118041  # the real root of psi^4 = psi + 4
    s = torch.arange(count, dtype=torch.float64) + 0.5
    t = s / count
    r, big_r = t.sqrt(), (1 - t).sqrt()
    alpha, beta = 2 * math.pi * s / phi, 2 * math.pi * s / psi
    return torch.stack((r * torch.sin(alpha), r * torch.cos(alpha), big_r * torch.sin(beta), big_r * torch.cos(beta)), -1)


def rotation_grid_in_ball(n: int, reach: float) -> torch.Tensor:
    """``(M, 3, 3)``, ``M`` about ``n``: the identity, then the rotations of a near-uniform
    grid of SO(3) whose angle is at most ``reach`` (a grid of ``n / f`` rotations, ``f`` the
    Haar share of that ball, ``(reach - sin reach) / pi``)."""
    share = (reach - math.sin(reach)) / math.pi
    grid = quaternion_matrices(uniform_rotation_grid(max(1, math.ceil(max(n - 1, 0) / max(share, 1e-9)))))
    keep = grid[rotation_angle(grid) <= reach + 1e-12][: max(n - 1, 0)]
    return torch.cat([torch.eye(3, dtype=torch.float64)[None], keep])


def rotations_from_six(raw: torch.Tensor) -> torch.Tensor:
    """``(N, 6)`` -> ``(N, 3, 3)``: the first two columns ``raw[:, :3] + e_x`` and
    ``raw[:, 3:] + e_y`` made orthonormal (Gram-Schmidt), the third their cross product:
    a representation of rotations without a jump (Zhou et al., CVPR 2019); ``raw = 0``
    is the identity."""
    eye = torch.eye(3, dtype=raw.dtype, device=raw.device)
    a = raw[:, :3] + eye[0]
    b = raw[:, 3:] + eye[1]
    c1 = a / torch.linalg.vector_norm(a, dim=-1, keepdim=True).clamp_min(1e-8)
    b = b - (c1 * b).sum(-1, keepdim=True) * c1
    c2 = b / torch.linalg.vector_norm(b, dim=-1, keepdim=True).clamp_min(1e-8)
    c3 = torch.cross(c1, c2, dim=-1)
    return torch.stack((c1, c2, c3), dim=-1)
