"""Numerical helpers of the ``student_t`` prior: a seeded Gamma sampler and the EM fit of a
Student-t mixture (McLachlan & Peel, *Finite Mixture Models*, 2000, ch. 7; Liu & Rubin 1995)."""

from __future__ import annotations

import math

import torch


def sample_standard_gamma(shape: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draws of ``Gamma(shape, rate=1)``, one per entry of ``shape``, from ``generator``.

    Marsaglia & Tsang's (2000) rejection method, vectorised; ``shape < 1`` is boosted
    through ``Gamma(a) = Gamma(a + 1) * U^(1/a)``. Written here because torch's own
    Gamma sampler takes no generator, and draws must be reproducible.
    """
    shape = shape.detach()
    boosted = torch.where(shape < 1, shape + 1, shape)
    d = boosted - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out = torch.empty_like(shape)
    pending = torch.ones_like(shape, dtype=torch.bool)
    while bool(pending.any()):  # each round accepts > 95% of what is left
        idx = pending.nonzero().squeeze(-1)
        x = torch.randn(idx.shape, generator=generator, dtype=shape.dtype, device=shape.device)
        u = torch.rand(idx.shape, generator=generator, dtype=shape.dtype, device=shape.device)
        v = (1 + c[idx] * x) ** 3
        safe_v = v.clamp_min(torch.finfo(v.dtype).tiny)
        accept = (v > 0) & (torch.log(u) < 0.5 * x * x + d[idx] - d[idx] * v + d[idx] * torch.log(safe_v))
        out[idx[accept]] = (d[idx] * v)[accept]
        pending[idx[accept]] = False
    small = shape < 1
    if bool(small.any()):
        u = torch.rand(shape.shape, generator=generator, dtype=shape.dtype, device=shape.device)
        out = torch.where(small, out * u.pow(1.0 / shape), out)
    return out


def student_t_log_density(z, loc, log_scale, dof) -> torch.Tensor:
    """``(N, K)`` log density of the diagonal-scale multivariate Student-t components
    ``t_dof_k(loc_k, diag(exp(2 log_scale_k)))`` at ``z (N, d)``."""
    d = z.shape[-1]
    white = (z.unsqueeze(1) - loc.unsqueeze(0)) * torch.exp(-log_scale).unsqueeze(0)
    maha = white.square().sum(-1)  # (N, K)
    norm = (
        torch.lgamma(0.5 * (dof + d))
        - torch.lgamma(0.5 * dof)
        - 0.5 * d * torch.log(dof * math.pi)
        - log_scale.sum(-1)
    )
    # log1p keeps far-away points finite and exact: log(1 + m / nu) without overflow.
    return norm.unsqueeze(0) - 0.5 * (dof + d).unsqueeze(0) * torch.log1p(maha / dof.unsqueeze(0))


def _dof_score(dof: torch.Tensor, maha: torch.Tensor, d: int) -> torch.Tensor:
    """``(N, K)`` derivative in ``nu`` of the Student-t log density at Mahalanobis ``maha``."""
    return 0.5 * (
        torch.digamma(0.5 * (dof + d))
        - torch.digamma(0.5 * dof)
        - d / dof
        - torch.log1p(maha / dof)
        + (dof + d) * maha / (dof * (dof + maha))
    )


def _maximise_dof(tau: torch.Tensor, maha: torch.Tensor, d: int, low: float, high: float, iters: int = 50):
    """``(K,)`` maximiser in ``[low, high]`` of ``sum_i tau_ik log t_nu(z_i)`` over each
    ``nu_k``: bisection on log(nu) for the sign of its derivative (clamped to the bounds)."""
    k = tau.shape[1]
    lo = torch.full((k,), math.log(low), dtype=tau.dtype, device=tau.device)
    hi = torch.full((k,), math.log(high), dtype=tau.dtype, device=tau.device)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        rising = (tau * _dof_score(torch.exp(mid).unsqueeze(0), maha, d)).sum(0) > 0
        lo = torch.where(rising, mid, lo)
        hi = torch.where(rising, hi, mid)
    return torch.exp(0.5 * (lo + hi))


def fit_student_t_mixture(
    data: torch.Tensor,
    weights: torch.Tensor,
    loc: torch.Tensor,
    scale2: torch.Tensor,
    dof: torch.Tensor,
    *,
    min_dof: float,
    max_dof: float,
    steps: int,
    fixed_weights: bool = False,
    min_scale2: float = 1e-6,
):
    """ECME steps of maximum likelihood for a mixture of diagonal-scale Student-t.

    E-step: responsibilities ``tau_ik`` and latent precision weights
    ``u_ik = (nu_k + d) / (nu_k + maha_ik)``. CM-steps: weights, locations
    (``tau * u``-weighted means), scales (``tau * u``-weighted second moments over
    ``sum_i tau_ik``), then each ``nu_k`` maximising ``sum_i tau_ik log t_nu(z_i)`` with the
    new locations and scales (the ECME variant of Liu & Rubin 1995, which converges far
    faster in ``nu`` than plain ECM), kept in ``[min_dof, max_dof]``.

    All tensors float64 on one device: ``data (N, d)``, ``weights (K,)``, ``loc (K, d)``,
    ``scale2 (K, d)``, ``dof (K,)``. ``fixed_weights`` keeps ``weights`` as given.
    Returns the updated ``(weights, loc, scale2, dof)``.
    """
    n, d = data.shape
    for _ in range(steps):
        log_t = student_t_log_density(data, loc, 0.5 * torch.log(scale2), dof)
        tau = torch.softmax(torch.log(weights).unsqueeze(0) + log_t, dim=1)  # (N, K)
        maha = ((data.unsqueeze(1) - loc.unsqueeze(0)).square() / scale2.unsqueeze(0)).sum(-1)
        u = (dof + d).unsqueeze(0) / (dof.unsqueeze(0) + maha)
        n_k = tau.sum(0).clamp_min(1e-10)
        if not fixed_weights:
            weights = n_k / n
        w = tau * u
        loc = (w.T @ data) / w.sum(0).clamp_min(1e-10).unsqueeze(-1)
        scale2 = (w.unsqueeze(-1) * (data.unsqueeze(1) - loc.unsqueeze(0)).square()).sum(0) / n_k.unsqueeze(-1)
        scale2 = scale2.clamp_min(min_scale2)
        maha = ((data.unsqueeze(1) - loc.unsqueeze(0)).square() / scale2.unsqueeze(0)).sum(-1)
        dof = _maximise_dof(tau, maha, d, min_dof, max_dof)
    return weights, loc, scale2, dof
