"""The checks of :class:`~mcvae_framework.testing.LieGroupContract` on the group's action:
``act`` moves content at ``p`` to ``g p``, composes like the group, inverts, is exact at the
identity and differentiable, on data of the kind the group moves (images or volumes)."""

from __future__ import annotations

import pytest
import torch

from .group_algebra import _max_err, _pixel_centres
from .group_discrete import _GroupPartsChecks


class _GroupActionChecks(_GroupPartsChecks):
    """The action checks of :class:`LieGroupContract`."""

    def test_act_gradcheck(self, group):
        gen = torch.Generator().manual_seed(11)
        shape = self.data_shape(group, 3, 2, 6) if self.spatial(group) == 2 else self.data_shape(group, 3, 1, 4)
        images = torch.rand(*shape, generator=gen, dtype=torch.float64, requires_grad=True)
        # not at the identity: there every sample lands on a pixel centre, where bilinear
        # interpolation has a kink and only one-sided derivatives exist
        components = self.random_components(group, 3, seed=11)
        tau = self.random_tau(group, 3, seed=11, scale=0.5, special_rows=False).requires_grad_(True)
        if group.dim == 0:  # a finite group: the gradient reaches the images only
            assert torch.autograd.gradcheck(lambda x: group.act(x, group.element(tau, components)), (images,))
            return
        assert torch.autograd.gradcheck(lambda t, x: group.act(x, group.element(t, components)), (tau, images))

    def test_act_identity_is_exact(self, group):
        for dtype in (torch.float32, torch.float64):
            for size in (28, 33) if self.spatial(group) == 2 else (12, 13):
                x = torch.rand(*self.data_shape(group, 3, 2, size), generator=torch.Generator().manual_seed(size),
                               dtype=dtype)
                out = group.act(x, group.identity(3, dtype=dtype))
                assert torch.equal(out, x), f"act(identity) changed a {dtype} {size}-pixel {group.data_kind}"
                assert torch.equal(group.act(x, group.exp(torch.zeros(3, group.dim, dtype=dtype))), x)

    @staticmethod
    def _move_points(g: torch.Tensor, p: torch.Tensor, spatial: int) -> torch.Tensor | None:
        """Where elements move point ``p``: ``A p + t`` for homogeneous ``(d+1, d+1)``
        elements, ``R p`` for ``(d, d)`` ones; ``None`` for another shape."""
        if tuple(g.shape[1:]) == (spatial + 1, spatial + 1):
            return g[:, :spatial, :spatial] @ p + g[:, :spatial, spatial]
        if tuple(g.shape[1:]) == (spatial, spatial):
            return g @ p
        return None

    def test_act_moves_content_at_p_to_g_p(self, group):
        spatial, size = self.spatial(group), self.data_size(group)
        p = torch.tensor([0.2, -0.1, 0.15][:spatial], dtype=torch.float64)
        x = self.blob_image(centre=tuple(p.tolist()), width=0.1, size=size, spatial=spatial)
        x = x.expand(*self.data_shape(group, 6, 1, size))
        g = self.random_elements(group, 6, seed=12, scale=0.3)
        expected = self._move_points(g, p, spatial)
        if expected is None:
            pytest.skip(f"elements of shape {tuple(g.shape[1:])} are neither homogeneous nor linear maps")
        out = group.act(x, g)
        axes = tuple(range(1, out.dim()))
        mass = out.sum(dim=axes)
        centroid = torch.stack([(out * c).sum(dim=axes) / mass for c in _pixel_centres(size, torch.float64, spatial)], -1)
        assert _max_err(centroid, expected) < 0.01, (centroid, expected)

    def _central(self, images: torch.Tensor) -> torch.Tensor:
        s = images.shape[-1]
        lo, hi = s // 4, s - s // 4
        return images[(...,) + (slice(lo, hi),) * (images.dim() - 2)]

    def _smooth_batch(self, group, n: int) -> torch.Tensor:
        size = self.data_size(group)
        return self.smooth_image(size=size, spatial=self.spatial(group)).expand(*self.data_shape(group, n, 1, size))

    def test_act_composition(self, group):
        x = self._smooth_batch(group, 6)
        g1 = self.random_elements(group, 6, seed=13, scale=0.3)
        g2 = self.random_elements(group, 6, seed=14, scale=0.3)
        twice = group.act(group.act(x, g2), g1)
        once = group.act(x, group.compose(g1, g2))
        assert _max_err(self._central(twice), self._central(once)) < self.act_tolerance

    def test_act_inverse(self, group):
        x = self._smooth_batch(group, 6)
        g = self.random_elements(group, 6, seed=15, scale=0.3)
        back = group.act(group.act(x, g), group.inverse(g))
        assert _max_err(self._central(back), self._central(x)) < self.act_tolerance

    def test_act_broadcasts_one_element(self, group):
        x = torch.rand(*self.data_shape(group, 4, 1, 16), dtype=torch.float64)
        g = self.random_elements(group, 2, seed=16)[1:]
        assert _max_err(group.act(x, g), group.act(x, g.expand(4, *g.shape[1:]))) == 0.0

