"""The Lie-group interface: the pose latent ``tau`` lives in the group's Lie algebra."""

from __future__ import annotations

import abc

import torch


class LieGroup(abc.ABC):
    """A matrix Lie group acting on images.

    Elements are homogeneous ``(N, 3, 3)`` matrices for the 2-D groups; ``tau`` are Lie
    algebra coordinates of shape ``(N, dim)``. Every method is batched over the first
    axis, differentiable, and keeps its input's device and dtype.
    """

    #: size of the Lie algebra coordinates ``tau``.
    dim: int

    @abc.abstractmethod
    def exp(self, tau: torch.Tensor) -> torch.Tensor:
        """``(N, dim)`` algebra coordinates -> ``(N, 3, 3)`` group elements."""

    @abc.abstractmethod
    def log(self, g: torch.Tensor) -> torch.Tensor:
        """``(N, 3, 3)`` group elements -> ``(N, dim)`` coordinates on the principal branch."""

    def compose(self, g1: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
        """The product ``g1 g2`` (apply ``g2`` first)."""
        return g1 @ g2

    @abc.abstractmethod
    def inverse(self, g: torch.Tensor) -> torch.Tensor:
        """``g^-1``."""

    @abc.abstractmethod
    def identity(self, n: int, *, dtype=None, device=None) -> torch.Tensor:
        """``n`` copies of the identity element."""

    @abc.abstractmethod
    def act(self, images: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Move ``(N, C, H, W)`` images by ``g``: content at point ``p`` moves to ``g p``."""

    @abc.abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n, dim)`` coordinates drawn from the configured pose distribution."""

    @abc.abstractmethod
    def log_prior(self, tau: torch.Tensor) -> torch.Tensor:
        """``(N,)`` log density of the configured pose prior at ``tau``."""

    @abc.abstractmethod
    def distance(self, g1: torch.Tensor, g2: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pose errors between ``g1`` and ``g2``, each ``(N,)``, keyed by unit
        (``rotation_deg`` wrapped to [0, 180]; ``translation``, ``log_scale`` where the
        group has them)."""
