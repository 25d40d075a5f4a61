"""The checks of :class:`~mcvae_framework.testing.LieGroupContract` for what a group
declares beyond its algebra (:class:`~mcvae_framework.interfaces.group_elements.GroupElements`):
its data kind and element shape, a discrete part, the invariant graph's search moves, an
orthogonal part and a network readout of ``tau``. A connected planar group passes them
with the defaults (most are skipped for it).
"""

from __future__ import annotations

import pytest
import torch

from mcvae_framework.hookspecs import DATA_KINDS

from .group_algebra import _LieGroupAlgebraChecks, _max_err


class _GroupPartsChecks(_LieGroupAlgebraChecks):
    """Data kind, discrete part, search moves, orthogonal part, network readout."""

    def test_declares_its_data_and_elements(self, group):
        assert getattr(group, "data_kind", "image") in DATA_KINDS, f"data_kind must be one of {sorted(DATA_KINDS)}"
        shape = tuple(getattr(group, "element_shape", (3, 3)))
        assert shape and all(isinstance(s, int) and s > 0 for s in shape)
        k = self.n_components(group)
        assert isinstance(k, int) and k >= 1
        names = tuple(getattr(group, "component_names", ()) or ())
        assert not names or len(names) == k, f"component_names {names} must name all {k} components"

    def _needs_components(self, group):
        if self.n_components(group) == 1:
            pytest.skip("the group is connected (n_components = 1)")

    def test_component_elements(self, group):
        self._needs_components(group)
        k = self.n_components(group)
        reps = group.component_elements(dtype=torch.float64)
        assert reps.shape == (k, *tuple(getattr(group, "element_shape", (3, 3))))
        assert _max_err(reps[:1], group.identity(1, dtype=torch.float64)) < self.atol, "the first must be the identity"
        assert torch.equal(group.component_of(reps), torch.arange(k)), "component_of(r_k) must be k"

    def test_element_split_round_trip(self, group):
        self._needs_components(group)
        tau = self.random_tau(group, 32, seed=30)
        components = self.random_components(group, 32, seed=30)
        g = group.element(tau, components)
        back_component, back_tau = group.split_element(g)
        assert torch.equal(back_component, components), "split_element must give back the component"
        assert _max_err(back_tau, tau) < 1e-8, "split_element must give back tau"
        assert _max_err(group.element(back_tau, back_component), g) < 1e-8

    def test_components_compose_like_their_representatives(self, group):
        self._needs_components(group)
        a, b = (self.random_elements(group, 16, seed=s) for s in (31, 32))
        reps = group.component_elements(dtype=torch.float64)
        expected = group.component_of(group.compose(reps[group.component_of(a)], reps[group.component_of(b)]))
        assert torch.equal(group.component_of(group.compose(a, b)), expected)
        assert torch.equal(group.component_of(group.inverse(a)), group.component_of(group.inverse(reps[group.component_of(a)])))

    def test_component_prior_and_sampling(self, group):
        k = self.n_components(group)
        log_p = group.log_component_prior(dtype=torch.float64)
        assert log_p.shape == (k,) and torch.isfinite(log_p).all()
        assert abs(torch.logsumexp(log_p, 0).item()) < 1e-9, "log_component_prior must be normalised"
        first = group.sample_component(500, torch.Generator().manual_seed(33))
        again = group.sample_component(500, torch.Generator().manual_seed(33))
        assert torch.equal(first, again) and first.dtype == torch.int64
        assert first.min() >= 0 and first.max() < k
        g, tau, component = group.sample_elements(50, torch.Generator().manual_seed(34), dtype=torch.float64)
        assert torch.equal(group.component_of(g), component)
        assert _max_err(g, group.element(tau, component)) < self.atol

    # ------------------------------------------------------------------ graph, orthogonal part, head

    def test_search_elements(self, group):
        moves = group.search_elements(9)
        assert moves.shape[1:] == tuple(getattr(group, "element_shape", (3, 3))) and len(moves) >= 1
        assert torch.isfinite(moves).all()
        if self.n_components(group) > 1:
            found = set(group.component_of(moves.double()).tolist())
            assert found == set(range(self.n_components(group))), \
                f"the search moves must reach every component (found {sorted(found)})"

    def test_orthogonal_part(self, group):
        d = int(getattr(group, "orthogonal_dim", 0) or 0)
        if d == 0:
            pytest.skip("the group declares no orthogonal part (orthogonal_dim = 0)")
        g = self.random_elements(group, 12, seed=35)
        m = group.orthogonal_part(g)
        assert m.shape == (12, d, d)
        assert _max_err(m @ m.transpose(1, 2), torch.eye(d, dtype=m.dtype).expand(12, d, d)) < 1e-8, "not orthogonal"
        back = group.from_orthogonal(m)
        assert _max_err(group.orthogonal_part(back), m) < self.atol
        assert torch.equal(group.component_of(back), group.component_of(g))
        # the orthogonal part of a product is the product of the parts
        h = self.random_elements(group, 12, seed=36)
        assert _max_err(group.orthogonal_part(group.compose(g, h)), m @ group.orthogonal_part(h)) < 1e-8

    def test_tau_from_network(self, group):
        size = int(getattr(group, "network_pose_size", 0) or 0)
        if size == 0:
            pytest.skip("the group's tau is predicted directly (network_pose_size = 0)")
        zero = group.tau_from_network(torch.zeros(3, size, dtype=torch.float64))
        assert zero.shape == (3, group.dim) and _max_err(zero, torch.zeros_like(zero)) < 1e-9, \
            "tau_from_network(0) must be the identity"
        raw = (0.3 * torch.randn(4, size, generator=torch.Generator().manual_seed(37), dtype=torch.float64))
        raw.requires_grad_(True)
        tau = group.tau_from_network(raw)
        assert tau.shape == (4, group.dim) and torch.isfinite(tau).all()
        tau.sum().backward()
        assert torch.isfinite(raw.grad).all()
