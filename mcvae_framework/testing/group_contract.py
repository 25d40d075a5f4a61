"""``LieGroupContract``: the generic tests every Lie-group plugin should pass.

Usage, in a plugin's test file::

    from mcvae_framework.testing import LieGroupContract

    class TestMyGroup(LieGroupContract):
        group_config = {"type": "my_group"}

pytest then checks, for the group that ``mcvae_framework.build("group", group_config)``
returns: the group axioms (identity, inverse, associativity), that ``exp`` is a group
exponential (``exp(-tau) = exp(tau)^-1``, one-parameter subgroups) unless the group
declares ``exponential_coordinates = False``, ``log(exp(tau)) == tau`` on
the principal branch and ``exp(log(g)) == g``, gradients of ``exp``, ``log`` and ``act``
(``torch.autograd.gradcheck`` in float64; ``exp`` and ``log`` at the identity too), that ``act`` moves
content at ``p`` to ``g p``, composes (``act(g1, act(g2, x)) ~ act(g1 g2, x)``) and
inverts on smooth images away from the border, that ``act(identity)`` is exact, that
``sample`` respects the configured ranges (``angle_deg``, ``shift``, ``log_scale`` when
the config has them) and is reproducible, that ``log_prior`` is finite and differentiable,
that ``distance`` behaves as a pose error with the group's own keys (its
``primary_error`` among them; ``rotation_error``, when the group rotates, wrapped to
[0, 180] and matched by ``half_turn``), that a declared geomstats space accepts the
group's elements as points (and importing geomstats leaves torch's default dtype
alone), that dtype and device are kept (CUDA too when present), and that malformed
inputs raise a ``ValueError`` naming their shape.

A column of ``tau`` named ``"theta"`` in ``group.coordinate_names`` is treated as an angle
(drawn in ``(-pi, pi)``, checked against the principal branch); other columns are drawn
from a normal of std ``coordinate_std``. Class attributes tune the kit.

What a group declares beyond its algebra is checked too
(:mod:`~mcvae_framework.testing.group_discrete`): its data kind and element shape; for a
group with a discrete part (``n_components > 1``) that ``component_elements``,
``component_of``, ``element`` and ``split_element`` agree, that components compose like
their representatives, that the component prior is normalised and sampling reproducible,
and that the search moves reach every component; an orthogonal part and a network readout
of ``tau`` where the group declares them. Random elements then include every component, and
every action check runs on data of the group's kind (``(N, C, S, S, S)`` volumes for a
group that moves volumes; a point ``p`` moves to ``A p + t`` for ``(d+1) x (d+1)``
homogeneous elements, to ``R p`` for ``d x d`` ones).
"""

from __future__ import annotations

import math

import pytest
import torch

from mcvae_framework import build
from mcvae_framework import geomstats_bridge as bridge

from .group_action import _GroupActionChecks
from .group_algebra import _max_err


class LieGroupContract(_GroupActionChecks):
    """Generic tests for a :class:`mcvae_framework.interfaces.LieGroup` plugin.

    Subclass it in a ``Test*`` class and set :attr:`group_config`.
    """

    # ------------------------------------------------------------------ sampling

    def _narrow_config(self, group) -> dict:
        fields = type(group.config).model_fields if group.config is not None else {}
        narrow = {}
        if "angle_deg" in fields:
            narrow["angle_deg"] = [10.0, 40.0]
        if "shift" in fields:
            narrow["shift"] = 0.05
        if "log_scale" in fields:
            narrow["log_scale"] = [0.1, 0.3]
        return narrow

    def test_sample_respects_ranges(self, group):
        narrow = self._narrow_config(group)
        if not narrow:
            pytest.skip("the group config has none of angle_deg, shift, log_scale")
        narrowed = build("group", {**self.group_config, **narrow})
        tau = narrowed.sample(4000, torch.Generator().manual_seed(17), dtype=torch.float64)
        assert torch.isfinite(tau).all()
        g = narrowed.exp(tau)
        tol = 1e-9
        if "angle_deg" in narrow:
            lo, hi = (math.radians(a) for a in narrow["angle_deg"])
            angle = torch.atan2(g[:, 1, 0] - g[:, 0, 1], g[:, 0, 0] + g[:, 1, 1])
            assert angle.min() >= lo - tol and angle.max() <= hi + tol
            assert angle.min() < lo + 0.02 * (hi - lo) and angle.max() > hi - 0.02 * (hi - lo), "angles do not fill the range"
            for i in self._angle_columns(narrowed):
                assert tau[:, i].min() >= lo - tol and tau[:, i].max() <= hi + tol
        if "shift" in narrow:
            reach = 2 * narrow["shift"]  # a fraction of the side is twice that in normalised units
            t = g[:, :2, 2]
            assert t.abs().max() <= reach + tol
            assert t.abs().max() > 0.95 * reach, "translations do not fill the range"
        if "log_scale" in narrow:
            lo, hi = narrow["log_scale"]
            log_scale = 0.5 * torch.log(torch.linalg.det(g[:, :2, :2]))
            assert log_scale.min() >= lo - tol and log_scale.max() <= hi + tol
            assert log_scale.min() < lo + 0.02 * (hi - lo) and log_scale.max() > hi - 0.02 * (hi - lo)

    def test_sample_is_reproducible(self, group):
        a = group.sample(50, torch.Generator().manual_seed(3))
        b = group.sample(50, torch.Generator().manual_seed(3))
        c = group.sample(50, torch.Generator().manual_seed(4))
        assert torch.equal(a, b)
        if group.dim == 0:  # a finite group: only its components vary
            a, c = (group.sample_elements(50, torch.Generator().manual_seed(s))[0] for s in (3, 4))
        assert not torch.equal(a, c)
        assert a.dtype == torch.get_default_dtype()
        assert group.sample(3, dtype=torch.float64).dtype == torch.float64

    # ------------------------------------------------------------------ prior and distance

    def test_log_prior_is_finite_and_differentiable(self, group):
        tau = torch.cat(
            (
                self.random_tau(group, 8),
                group.sample(8, torch.Generator().manual_seed(18), dtype=torch.float64),
                torch.full((2, group.dim), 1e3, dtype=torch.float64),
            )
        ).requires_grad_(True)
        lp = group.log_prior(tau)
        assert lp.shape == (18,) and torch.isfinite(lp).all()
        if group.dim == 0:
            return  # a finite group: nothing continuous to differentiate or to go far along
        lp.sum().backward()
        assert torch.isfinite(tau.grad).all()
        # a proper prior is not flat forever: far away it is less likely than at zero
        assert lp[-1] < group.log_prior(torch.zeros(1, group.dim, dtype=torch.float64))[0]

    def _two_batches(self, group) -> tuple[torch.Tensor, torch.Tensor]:
        """Two batches of 16 elements that differ from row 2 on (a finite group's second
        batch is the first moved by another component)."""
        g1 = self.random_elements(group, 16, seed=19)
        if group.dim:
            return g1, self.random_elements(group, 16, seed=20)
        shift = 1 + torch.randint(self.n_components(group) - 1, (16,), generator=torch.Generator().manual_seed(20))
        return g1, group.compose(g1, group.component_elements(dtype=g1.dtype)[shift])

    def test_distance(self, group):
        g1, g2 = self._two_batches(group)
        d = group.distance(g1, g2)
        assert isinstance(d, dict) and d, "distance must return at least one error, keyed by its name"
        for key, value in d.items():
            assert isinstance(key, str) and key, f"error keys must be non-empty strings, got {key!r}"
            assert value.shape == (16,), key
            assert (value >= 0).all(), key
            assert _max_err(value, group.distance(g2, g1)[key]) < 1e-9, f"{key} is not symmetric"
            assert group.distance(g1, g1)[key].abs().max() < 1e-6, f"{key} of g and g is not 0"
        # two different poses differ by at least one error (rows 0 and 1 are the identity
        # and a tiny element in both batches)
        assert torch.stack(list(d.values())).amax(0)[2:].min() > 0, "distance is 0 between different poses"

    def test_error_keys_are_declared(self, group):
        g = self.random_elements(group, 4, seed=21)
        keys = set(group.distance(g, g))
        primary = getattr(group, "primary_error", None)
        assert primary is None or primary in keys, f"primary_error {primary!r} is not a key of distance {sorted(keys)}"
        rotation = getattr(group, "rotation_error", None)
        assert rotation is None or rotation in keys, f"rotation_error {rotation!r} is not a key of distance {sorted(keys)}"

    def test_rotation_error_wraps_and_half_turn(self, group):
        rotation = getattr(group, "rotation_error", None)
        half = group.half_turn(dtype=torch.float64) if hasattr(group, "half_turn") else None
        if rotation is None:
            assert half is None, "half_turn is set but rotation_error is None: declare the rotation error key"
            pytest.skip("the group does not rotate (rotation_error is None)")
        d = group.distance(*self._two_batches(group))
        assert (d[rotation] <= 180 + 1e-9).all()
        for i in self._angle_columns(group):
            tau = torch.zeros(2, group.dim, dtype=torch.float64)
            tau[0, i], tau[1, i] = math.radians(170.0), math.radians(-170.0)
            rot = group.distance(group.exp(tau[:1]), group.exp(tau[1:]))[rotation]
            assert abs(rot.item() - 20.0) < 1e-6, f"{rotation} must wrap around the circle"
        assert half is not None, f"a group with rotation_error {rotation!r} needs half_turn()"
        e = group.identity(1, dtype=torch.float64)
        assert half.shape == (1, *e.shape[1:])
        assert _max_err(group.compose(half, half), e) < self.atol, "half_turn twice is not the identity"
        assert abs(group.distance(half, e)[rotation].item() - 180.0) < 1e-6, "half_turn does not turn by 180 degrees"
        # composing with it turns every pose by half a turn
        g = self.random_elements(group, 4, seed=22)
        turned = group.distance(group.compose(g, half.expand(4, *half.shape[1:])), g)[rotation]
        assert _max_err(turned, torch.full_like(turned, 180.0)) < 1e-6

    # ------------------------------------------------------------------ geomstats

    def test_geomstats_space(self, group):
        if not bridge.has_geomstats_space(group):
            pytest.skip("the group names no geomstats space (geomstats_space is not overridden)")
        dtype = torch.get_default_dtype()
        space = bridge.geomstats_space_of(group)
        assert torch.get_default_dtype() == dtype, "building the geomstats space changed torch's default dtype"
        if space is None:
            pytest.skip("geomstats_space returned None")
        g = group.exp(self.random_tau(group, 8, seed=23, scale=0.5))
        points = group.geomstats_point(g)
        back = group.from_geomstats_point(points.to(torch.float64))
        assert back.shape == g.shape and _max_err(back, g) < self.atol, "from_geomstats_point does not invert geomstats_point"
        m = bridge.modules()
        with bridge.float64_scope():
            belongs = bridge.to_torch(space.belongs(bridge.to_backend(points, m)))
        assert bool(belongs.all()), f"geomstats' {bridge.space_name(space)} does not accept the group's elements: {belongs.tolist()}"
        # the geomstats mean of elements spread around a centre lands near that centre
        centre = group.exp(self.random_tau(group, 1, seed=24, scale=0.5, special_rows=False))[0]
        spread = group.exp(self.random_tau(group, 6, seed=25, scale=0.02, special_rows=False))
        mean = bridge.space_mean(group, space, group.compose(centre.expand(6, *centre.shape), spread), centre)
        assert torch.get_default_dtype() == dtype
        assert mean.shape == centre.shape and _max_err(mean, centre) < 0.1, (mean, centre)

    # ------------------------------------------------------------------ dtype and device

    @pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_dtype_and_device_are_kept(self, group, dtype, device):
        tau = self.random_tau(group, 4, dtype=dtype).to(device)
        components = self.random_components(group, 4)
        g = group.element(tau, components.to(device) if components is not None else None)
        x = torch.rand(*self.data_shape(group, 4, 1, 12), dtype=dtype, device=device)
        e = group.identity(4, dtype=dtype, device=device)
        results = {
            "exp": g,
            "log": group.log(g),
            "compose": group.compose(g, g),
            "inverse": group.inverse(g),
            "identity": e,
            "act": group.act(x, g),
            "log_prior": group.log_prior(tau),
            "sample": group.sample(3, dtype=dtype, device=device),
            **{f"distance[{k}]": v for k, v in group.distance(g, e).items()},
        }
        for name, value in results.items():
            assert value.dtype == dtype and value.device.type == device, f"{name}: {value.dtype} on {value.device}"
        assert torch.isfinite(results["log"]).all()

    # ------------------------------------------------------------------ bad input

    def _raises_naming(self, shape, fn, *args):
        with pytest.raises(ValueError) as info:
            fn(*args)
        assert str(tuple(shape)) in str(info.value), f"error does not name the shape {tuple(shape)}: {info.value}"

    def test_bad_tau_width(self, group):
        bad = torch.zeros(3, group.dim + 1)
        self._raises_naming(bad.shape, group.exp, bad)
        self._raises_naming(bad.shape, group.log_prior, bad)
        flat = torch.zeros(group.dim)
        self._raises_naming(flat.shape, group.exp, flat)

    def test_bad_matrices(self, group):
        bad = torch.zeros(3, 2, 3)
        self._raises_naming(bad.shape, group.log, bad)
        self._raises_naming(bad.shape, group.inverse, bad)
        self._raises_naming(bad.shape, group.act, torch.zeros(*self.data_shape(group, 3, 1, 8)), bad)

    def test_bad_images(self, group):
        g = group.identity(2)
        if self.spatial(group) == 3:
            bads = (torch.zeros(2, 8, 8, 8), torch.zeros(2, 1, 8, 8, 6), torch.zeros(2, 1, 8, 8), torch.zeros(1, 2, 1, 8, 8, 8))
        else:
            bads = (torch.zeros(2, 8, 8), torch.zeros(2, 1, 8, 6), torch.zeros(1, 2, 1, 8, 8))
        for bad in bads:
            self._raises_naming(bad.shape, group.act, bad, g)
        # one element per image, or a single element for all
        self._raises_naming(g.shape, group.act, torch.zeros(*self.data_shape(group, 3, 1, 8)), g)
