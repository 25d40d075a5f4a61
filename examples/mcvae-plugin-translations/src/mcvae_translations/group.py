"""The group T(2) of planar translations, acting on images by shifting their content."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from mcvae_framework import ComponentConfig
from mcvae_framework.interfaces import AffineGroup2D


class Translation2Config(ComponentConfig):
    """Pure 2-D translations T(2): the pose is the shift ``(u1, u2)`` of the content.

    The fields set the pose distribution that ``sample`` draws from (used by the
    invariance terms of the loss and by dataset transforms) and the Gaussian pose prior,
    with the names and units of the built-in groups' ``shift`` and ``prior_shift_std``.
    """

    type: Literal["translation2"] = "translation2"
    shift: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="largest shift sample() draws along each axis, as a fraction of the image "
        "side (0.25 = a quarter of the side = 0.5 normalised units), uniform per axis",
    )
    prior_shift_std: float = Field(
        0.25,
        gt=0.0,
        description="standard deviation of the Gaussian pose prior on u1 and u2, as a fraction "
        "of the image side (0.25 = 0.5 normalised units)",
    )


class Translation2(AffineGroup2D):
    """T(2) as homogeneous matrices ``[[1, 0, u1], [0, 1, u2], [0, 0, 1]]``.

    The Lie algebra coordinates are the translation itself, ``tau = (u1, u2)``, in
    normalised image coordinates (``u1`` along the width, ``u2`` down the height; 1 is half
    the image side). The group is abelian and ``exp`` is the identity map on coordinates,
    so ``log`` has no branch to choose. ``identity``, ``compose``, ``inverse``, ``act``
    (content at ``p`` moves to ``p + u``) and ``distance`` (``translation`` in normalised
    units, its only key: no column is named ``theta``, so the group reports no rotation)
    come from :class:`AffineGroup2D`.

    :param config: the validated :class:`Translation2Config`.
    """

    name = "translation2"
    dim = 2
    coordinate_names = ("u1", "u2")
    has_translation = True
    has_scale = False

    def __init__(self, config: Translation2Config):
        self.config = config

    def exp(self, tau: torch.Tensor) -> torch.Tensor:
        """``(N, 2)`` shifts -> ``(N, 3, 3)`` translation matrices (differentiable)."""
        self.check_tau(tau)
        one, zero = torch.ones_like(tau[:, 0]), torch.zeros_like(tau[:, 0])
        entries = (one, zero, tau[:, 0], zero, one, tau[:, 1], zero, zero, one)
        return torch.stack(entries, dim=-1).view(-1, 3, 3)

    def log(self, g: torch.Tensor) -> torch.Tensor:
        """``(N, 3, 3)`` translation matrices -> ``(N, 2)`` shifts (their last column)."""
        self.check_matrices(g)
        return self.translation_of(g).clone()

    def sample(self, n: int, generator: torch.Generator | None = None, *, dtype=None, device=None) -> torch.Tensor:
        """``(n, 2)`` shifts, each coordinate uniform in ``[-2 shift, 2 shift]`` normalised
        units (``shift`` is a fraction of the image side, which spans 2 units).

        :param n: how many.
        :param generator: a seeded :class:`torch.Generator` for reproducible draws.
        :param dtype: defaults to ``torch.get_default_dtype()``.
        :param device: defaults to the generator's device, else the CPU.
        """
        if device is None:
            device = generator.device if generator is not None else "cpu"
        unit = torch.rand(n, 2, generator=generator, dtype=dtype or torch.get_default_dtype(), device=device)
        return (2.0 * unit - 1.0) * (2.0 * self.config.shift)

    def log_prior(self, tau: torch.Tensor) -> torch.Tensor:
        """``(N,)`` log density of the isotropic Gaussian ``N(0, s^2 I)`` at ``tau``, with
        ``s = 2 prior_shift_std`` in normalised units."""
        self.check_tau(tau)
        std = 2.0 * self.config.prior_shift_std
        return -0.5 * (tau / std).square().sum(-1) - 2.0 * math.log(std) - math.log(2.0 * math.pi)
