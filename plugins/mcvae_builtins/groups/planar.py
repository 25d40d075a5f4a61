"""The common body of the four built-in groups: subgroups of Sim(2) = R+ x SO(2) x R^2.

``tau`` is laid out as ``theta`` (radians), then ``log_scale`` if the group scales, then
``u1, u2`` if it translates. An element is ``[[k cos, -k sin, t1], [k sin, k cos, t2],
[0, 0, 1]]`` with ``k = e^log_scale`` and ``t = phi(w) u``, ``w = log_scale + i theta``
(see :mod:`.closed_forms`). A concrete group only sets its name, size and flags.
"""

from __future__ import annotations

import math

import torch

from mcvae_framework.interfaces import AffineGroup2D

from .closed_forms import NATIVE_DTYPES, flat_top_log_prior, phi

#: the invariant graph's default step between searched rotations
SEARCH_STEP_DEG = 10.0


class PlanarPoseGroup(AffineGroup2D):
    """Exp, log, sampling and prior shared by SO(2), SE(2), scale-rotation and Sim(2).

    :param config: the group's validated config (pose distribution and prior).
    """

    def __init__(self, config):
        self.config = config
        self._prior_cache: dict = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    # ------------------------------------------------------------ coordinates

    def _columns(self, tau: torch.Tensor):
        theta = tau[:, 0]
        log_scale = tau[:, 1] if self.has_scale else None
        u = (tau[:, -2], tau[:, -1]) if self.has_translation else None
        return theta, log_scale, u

    def _tau(self, theta, log_scale, u) -> torch.Tensor:
        cols = [theta]
        if self.has_scale:
            cols.append(log_scale)
        if self.has_translation:
            cols.extend(u)
        return torch.stack(cols, dim=-1)

    @staticmethod
    def _w(theta, log_scale):
        """``w = log_scale + i theta`` (``log_scale`` 0 when ``None``)."""
        return torch.complex(torch.zeros_like(theta) if log_scale is None else log_scale, theta)

    def _u_from_translation(self, theta, log_scale, t1, t2):
        """``u = t / phi(w)``, the algebra coordinates of a translation ``t``."""
        u = torch.complex(t1, t2) / phi(self._w(theta, log_scale))
        return u.real, u.imag

    # ------------------------------------------------------------ exp / log

    def exp(self, tau: torch.Tensor) -> torch.Tensor:
        """``(N, dim)`` coordinates -> ``(N, 3, 3)`` matrices, in closed form."""
        self.check_tau(tau)
        if tau.dtype not in NATIVE_DTYPES:  # complex half precision is barely supported
            return self.exp(tau.float()).to(tau.dtype)
        theta, log_scale, u = self._columns(tau)
        w = None
        if log_scale is not None:
            w = torch.complex(log_scale, theta)
            linear = torch.exp(w)  # e^s (cos + i sin)
            cos, sin = linear.real, linear.imag
        else:
            cos, sin = torch.cos(theta), torch.sin(theta)
        zeros = torch.zeros_like(theta)
        if u is not None:
            if w is None:
                w = torch.complex(zeros, theta)
            t = phi(w) * torch.complex(*u)
            t1, t2 = t.real, t.imag
        else:
            t1 = t2 = zeros
        ones = torch.ones_like(theta)
        return torch.stack((cos, -sin, t1, sin, cos, t2, zeros, zeros, ones), dim=-1).view(-1, 3, 3)

    def log(self, g: torch.Tensor) -> torch.Tensor:
        """``(N, 3, 3)`` matrices -> ``(N, dim)`` coordinates, ``theta`` in ``(-pi, pi]``."""
        self.check_matrices(g)
        if g.dtype not in NATIVE_DTYPES:
            return self.log(g.float()).to(g.dtype)
        theta = self.rotation_angle(g)
        log_scale = self.log_scale_of(g) if self.has_scale else None
        u = None
        if self.has_translation:
            u = self._u_from_translation(theta, log_scale, g[:, 0, 2], g[:, 1, 2])
        return self._tau(theta, log_scale, u)

    # ------------------------------------------------------------ pose distribution

    def sample(self, n: int, generator: torch.Generator | None = None, *, dtype=None, device=None) -> torch.Tensor:
        """Draw ``(n, dim)`` coordinates: angle uniform in ``angle_deg``, log-scale uniform in
        ``log_scale``, and the image translation ``t`` (not ``u``) uniform in
        ``[-2 shift, 2 shift]^2`` normalised units; ``u`` is then ``t / phi(w)`` (``V^-1 t``)."""
        dtype = dtype or torch.get_default_dtype()
        if dtype not in NATIVE_DTYPES:
            return self.sample(n, generator, dtype=torch.float32, device=device).to(dtype)
        if device is None:
            device = generator.device if generator is not None else torch.device("cpu")
        cfg = self.config
        uniform = torch.rand(n, self.dim, generator=generator, dtype=dtype, device=device)
        lo, hi = (math.radians(a) for a in cfg.angle_deg)
        theta = lo + (hi - lo) * uniform[:, 0]
        log_scale = u = None
        if self.has_scale:
            s_lo, s_hi = cfg.log_scale
            log_scale = s_lo + (s_hi - s_lo) * uniform[:, 1]
        if self.has_translation:
            t = (2.0 * uniform[:, -2:] - 1.0) * (2.0 * cfg.shift)
            u = self._u_from_translation(theta, log_scale, t[:, 0], t[:, 1])
        return self._tau(theta, log_scale, u)

    # ------------------------------------------------------------ invariant graph

    def search_poses(self, n: int) -> torch.Tensor:
        """Relative rotations for the invariant graph (translations and scales are left to
        :meth:`prealign`), evenly spaced:

        * when the configured angle range is the full circle, over the whole circle: every
          relative rotation occurs in such data, and under heavy noise the graph cannot
          chain small steps around it (simulated particles at SNR 0.05: 0.41 accuracy with
          +-60 degrees, 0.99 with the full circle);
        * otherwise over ``[-R, R]`` with ``R`` the smaller of 60 degrees and half the range:
          the graph chains neighbours across the rest, and a limited search keeps a 6 from
          matching a 9 that the data's range never turns into one.

        :param n: how many; 0: one every 10 degrees of the searched range.
        """
        lo, hi = self.config.angle_deg
        full = hi - lo >= 360.0 - 1e-6
        reach = math.pi if full else math.radians(min(60.0, (hi - lo) / 2.0))
        if n <= 0:
            n = round(math.degrees(2 * reach) / SEARCH_STEP_DEG) + (0 if full else 1)
        tau = torch.zeros(n, self.dim)
        if n > 1:
            # the full circle in n equal steps from the identity (-180 and 180 are one rotation)
            tau[:, 0] = (torch.arange(n) - n // 2) * (2 * math.pi / n) if full else torch.linspace(-reach, reach, n)
        return tau

    # ------------------------------------------------------------ pose prior

    def _prior_bounds(self) -> list[tuple[float, float, float]]:
        """``(lo, hi, width)`` per column: flat on ``[lo, hi]``, normal shoulders of ``width``."""
        cfg = self.config
        uniform = cfg.prior == "uniform"
        lo, hi = (math.radians(a) for a in cfg.angle_deg) if uniform else (0.0, 0.0)
        cols = [(lo, hi, math.radians(cfg.prior_angle_std_deg))]
        if self.has_scale:
            s_lo, s_hi = cfg.log_scale if uniform else (0.0, 0.0)
            cols.append((s_lo, s_hi, cfg.prior_log_scale_std))
        if self.has_translation:
            reach = 2.0 * cfg.shift if uniform else 0.0
            cols += [(-reach, reach, 2.0 * cfg.prior_shift_std)] * 2
        return cols

    def log_prior(self, tau: torch.Tensor) -> torch.Tensor:
        """``(N,)`` log density of the pose prior (see the config's ``prior`` field).

        Each coordinate has density ``exp(-d^2 / (2 w^2)) / (hi - lo + sqrt(2 pi) w)`` with
        ``d`` its distance outside ``[lo, hi]``: a normal when ``lo = hi = 0``, a flat top
        with normal shoulders for the uniform prior; continuous, once differentiable and
        normalised on the real line.
        """
        self.check_tau(tau)
        return flat_top_log_prior(tau, self._prior_bounds, self._prior_cache)
