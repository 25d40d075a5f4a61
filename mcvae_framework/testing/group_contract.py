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

from .group_algebra import _LieGroupAlgebraChecks, _max_err, _pixel_centres  # noqa: F401  (the kit's base)
from .group_discrete import _GroupPartsChecks


class LieGroupContract(_GroupPartsChecks):
    """Generic tests for a :class:`mcvae_framework.interfaces.LieGroup` plugin.

    Subclass it in a ``Test*`` class and set :attr:`group_config`.
    """

    # ------------------------------------------------------------------ the action

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
