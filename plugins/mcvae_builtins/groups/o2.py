"""``o2``: rotations of the plane and their mirror images, ``tau = (theta,)`` plus a
reflection.

O(2) has two components: the rotations ``R(theta)`` and the reflections
``R(theta) F``, with ``F`` the mirror image left-right (``x -> -x`` in normalised image
coordinates). No ``exp(tau)`` reaches a reflection, so an element is ``exp(tau) . F^k``
with ``k`` the component (0: a rotation, 1: a mirror image then a rotation): the image
is mirrored first, then turned by ``theta``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from mcvae_framework.interfaces import OrthogonalBlock2D

from .planar import PlanarPoseGroup
from .pose_config import PoseBase


class O2Config(PoseBase):
    """Rotations about the image centre and mirror images: `sample` turns in `angle_deg` and
    mirrors with probability `flip`."""

    type: Literal["o2"] = Field("o2", description="the group's tag")
    flip: float = Field(
        0.5, ge=0.0, le=1.0,
        description="probability that `sample` draws a mirror image (left-right, before the turn); the "
        "ELBO's prior on the reflection is uniform whatever this is",
    )


class Orthogonal2(OrthogonalBlock2D, PlanarPoseGroup):
    """O(2) as ``(N, 3, 3)`` homogeneous matrices ``[[R(theta) F^k, 0], [0, 1]]``."""

    name = "o2"
    dim = 1
    coordinate_names = ("theta",)
    has_translation = False
    has_scale = False
    n_components = 2
    component_names = ("identity", "reflection")
    discrete_part = "reflection"

    def component_elements(self, *, dtype=None, device=None) -> torch.Tensor:
        """The identity and ``F = diag(-1, 1, 1)`` (the mirror image left-right)."""
        out = self.identity(2, dtype=dtype, device=device)
        out[1, 0, 0] = -1.0
        return out

    def component_of(self, g: torch.Tensor) -> torch.Tensor:
        """1 where the linear block's determinant is negative (a reflection), else 0."""
        self.check_matrices(g)
        det = g[:, 0, 0] * g[:, 1, 1] - g[:, 0, 1] * g[:, 1, 0]
        return (det < 0).to(torch.int64)

    def _rotation_factor(self, g: torch.Tensor) -> torch.Tensor:
        """``g F^k``: the rotation ``R(theta)`` of ``g = R(theta) F^k`` (the first column of a
        reflection negated; differentiable)."""
        sign = 1.0 - 2.0 * self.component_of(g).to(g.dtype)
        return torch.cat([g[:, :, :1] * sign.view(-1, 1, 1), g[:, :, 1:]], dim=2)

    def log(self, g: torch.Tensor) -> torch.Tensor:
        """``(N, 3, 3)`` -> ``(N, 1)``: ``theta`` of ``g = exp(theta) F^k`` in ``(-pi, pi]``,
        for either component (the reflection itself is :meth:`component_of`)."""
        self.check_matrices(g)
        return self.rotation_angle(self._rotation_factor(g))[:, None]

    def sample_component(self, n: int, generator: torch.Generator | None = None, *, device=None) -> torch.Tensor:
        """``(n,)`` 1 (a mirror image) with probability ``flip``, else 0."""
        if device is None:
            device = generator.device if generator is not None else torch.device("cpu")
        draws = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
        return (draws < self.config.flip).to(torch.int64)

    def distance(self, g1: torch.Tensor, g2: torch.Tensor) -> dict[str, torch.Tensor]:
        """``rotation_deg``: the angle between the two rotations ``theta`` (wrapped to
        ``[0, 180]``, whatever the reflections); ``reflection``: 1 where one element is a
        mirror image and the other is not, else 0."""
        self.check_matrices(g1, "g1")
        self.check_matrices(g2, "g2")
        diff = self.log(g1)[:, 0] - self.log(g2)[:, 0]
        wrapped = torch.remainder(diff + math.pi, 2 * math.pi) - math.pi
        flips = (self.component_of(g1) != self.component_of(g2)).to(g1.dtype)
        return {"rotation_deg": torch.rad2deg(wrapped.abs()), "reflection": flips}

    def search_elements(self, n: int) -> torch.Tensor:
        """The ``n`` search rotations of :meth:`search_poses`, each also mirrored: ``2 n``
        moves, so that an image and its mirror image are compared."""
        rotations = self.exp(self.search_poses(n))
        mirrored = self.compose(rotations, self.component_elements(dtype=rotations.dtype)[1:].expand_as(rotations))
        return torch.cat([rotations, mirrored])


def make_o2(config: O2Config) -> Orthogonal2:
    """Factory registered for the ``o2`` tag."""
    return Orthogonal2(config)
