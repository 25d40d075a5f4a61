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
"""

from __future__ import annotations

import math

import pytest
import torch

from mcvae_framework import build
from mcvae_framework import geomstats_bridge as bridge


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def _pixel_centres(size: int, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised ``(x, y)`` of every pixel centre (affine_grid, align_corners=False)."""
    c = (2 * torch.arange(size, dtype=dtype) + 1) / size - 1
    y, x = torch.meshgrid(c, c, indexing="ij")
    return x, y


class _LieGroupAlgebraChecks:
    """The first half of :class:`LieGroupContract`: its settings, fixtures and helpers, and
    the checks of the group's algebra (shapes, axioms, ``exp``/``log``)."""

    #: the group's config section, e.g. ``{"type": "se2", "shift": 0.2}`` (required).
    group_config: dict | None = None
    #: std of the non-angle coordinates of the random ``tau`` used by the algebraic checks.
    coordinate_std: float = 0.5
    #: side of the smooth test images used by the action checks.
    image_size: int = 64
    #: largest pixel difference allowed between two bilinear resamplings of a smooth image.
    act_tolerance: float = 0.02
    #: float64 tolerance of the algebraic identities.
    atol: float = 1e-9

    # ------------------------------------------------------------------ fixtures

    @pytest.fixture
    def group(self):
        if not self.group_config or "type" not in self.group_config:
            pytest.fail(f"{type(self).__name__} must set group_config = {{'type': '<tag>', ...}}")
        return build("group", self.group_config)

    # ------------------------------------------------------------------ helpers

    def random_tau(
        self, group, n: int, seed: int = 0, dtype=torch.float64, scale: float = 1.0, special_rows: bool = True
    ) -> torch.Tensor:
        """``(n, dim)`` algebra coordinates: angles in ``(-pi, pi)``, the rest normal; with
        ``special_rows`` the first row is zero and the second tiny, so that series branches
        are exercised."""
        gen = torch.Generator().manual_seed(seed)
        tau = torch.randn(n, group.dim, generator=gen, dtype=torch.float64) * self.coordinate_std
        for i, name in enumerate(self._names(group)):
            if name == "theta":
                tau[:, i] = (torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * (math.pi - 0.05)
        tau = tau * scale
        if special_rows:
            tau[0] = 0.0
            if n > 1:
                tau[1] = 1e-9
        return tau.to(dtype)

    @staticmethod
    def _names(group) -> tuple[str, ...]:
        names = tuple(getattr(group, "coordinate_names", ()) or ())
        return names if len(names) == group.dim else ()

    def _angle_columns(self, group) -> list[int]:
        return [i for i, name in enumerate(self._names(group)) if name == "theta"]

    def blob_image(self, centre=(0.0, 0.0), width: float = 0.25, dtype=torch.float64, size=None) -> torch.Tensor:
        """``(1, 1, S, S)`` Gaussian blob at normalised ``centre`` (x, y)."""
        x, y = _pixel_centres(size or self.image_size, dtype)
        blob = torch.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / (2 * width**2))
        return blob[None, None]

    def smooth_image(self, dtype=torch.float64, size=None) -> torch.Tensor:
        """``(1, 1, S, S)`` smooth pattern without symmetries (three blobs off the centre),
        so that every rotation, shift or zoom changes it, while two bilinear resamplings
        still agree closely."""
        size = size or self.image_size
        return (
            self.blob_image((0.3, 0.1), 0.2, dtype, size)
            + 0.7 * self.blob_image((-0.2, -0.25), 0.25, dtype, size)
            + 0.4 * self.blob_image((-0.1, 0.3), 0.15, dtype, size)
        )

    # ------------------------------------------------------------------ shapes

    def test_shapes(self, group):
        assert isinstance(group.dim, int) and group.dim >= 1
        tau = self.random_tau(group, 5)
        g = group.exp(tau)
        assert g.shape == (5, 3, 3)
        assert group.log(g).shape == (5, group.dim)
        assert group.identity(4).shape == (4, 3, 3)
        assert group.log_prior(tau).shape == (5,)
        assert group.sample(7).shape == (7, group.dim)

    # ------------------------------------------------------------------ axioms

    def test_identity_element(self, group):
        g = group.exp(self.random_tau(group, 8))
        e = group.identity(8, dtype=torch.float64)
        assert _max_err(group.compose(e, g), g) < self.atol
        assert _max_err(group.compose(g, e), g) < self.atol
        assert _max_err(group.exp(torch.zeros(3, group.dim, dtype=torch.float64)), group.identity(3, dtype=torch.float64)) < self.atol
        assert _max_err(group.log(e), torch.zeros(8, group.dim, dtype=torch.float64)) < self.atol

    def test_inverse(self, group):
        g = group.exp(self.random_tau(group, 8))
        e = group.identity(8, dtype=torch.float64)
        assert _max_err(group.compose(g, group.inverse(g)), e) < self.atol
        assert _max_err(group.compose(group.inverse(g), g), e) < self.atol
        if getattr(group, "exponential_coordinates", True):
            # the inverse of exp(tau) is exp(-tau)
            tau = self.random_tau(group, 8, seed=1)
            assert _max_err(group.inverse(group.exp(tau)), group.exp(-tau)) < self.atol

    def test_associativity(self, group):
        a, b, c = (group.exp(self.random_tau(group, 6, seed=s)) for s in (1, 2, 3))
        left = group.compose(group.compose(a, b), c)
        right = group.compose(a, group.compose(b, c))
        assert _max_err(left, right) < self.atol

    def test_one_parameter_subgroup(self, group):
        # exp((s + t) tau) = exp(s tau) exp(t tau): exp is a true group exponential
        if not getattr(group, "exponential_coordinates", True):
            pytest.skip("the group's chart is not the group exponential (exponential_coordinates = False)")
        tau = self.random_tau(group, 8, seed=4, scale=0.5)
        assert _max_err(group.exp(0.3 * tau + 0.7 * tau), group.compose(group.exp(0.3 * tau), group.exp(0.7 * tau))) < self.atol

    # ------------------------------------------------------------------ exp / log

    def test_log_exp_round_trip(self, group):
        tau = self.random_tau(group, 64)
        assert _max_err(group.log(group.exp(tau)), tau) < 1e-8

    def test_log_exp_round_trip_on_samples(self, group):
        tau = group.sample(256, torch.Generator().manual_seed(5), dtype=torch.float64)
        assert _max_err(group.log(group.exp(tau)), tau) < 1e-8

    def test_exp_log_round_trip(self, group):
        # products leave the principal range of each factor: log must still invert exp
        a, b = (group.exp(self.random_tau(group, 64, seed=s)) for s in (6, 7))
        g = group.compose(a, b)
        assert _max_err(group.exp(group.log(g)), g) < 1e-8

    def test_log_is_on_the_principal_branch(self, group):
        columns = self._angle_columns(group)
        if not columns:
            pytest.skip("the group has no angle coordinate named 'theta'")
        tau = self.random_tau(group, 32, seed=8)
        tau[:, columns] = tau[:, columns] + 2 * math.pi * torch.tensor([1.0, -1.0]).repeat(16)[:, None].to(tau)
        tau[2, columns] = math.pi
        tau[3, columns] = -math.pi
        g = group.exp(tau)
        log = group.log(g)
        theta = log[:, columns]
        assert (theta > -math.pi).all() and (theta <= math.pi + 1e-12).all(), theta
        assert _max_err(group.exp(log), g) < 1e-8

    def test_exp_gradcheck(self, group):
        tau = self.random_tau(group, 5, seed=9).requires_grad_(True)
        assert torch.autograd.gradcheck(group.exp, (tau,))

    def test_log_gradcheck(self, group):
        g = group.exp(self.random_tau(group, 5, seed=10)).requires_grad_(True)
        assert torch.autograd.gradcheck(group.log, (g,))

    def test_gradients_finite_at_identity(self, group):
        tau = torch.zeros(2, group.dim, dtype=torch.float32, requires_grad=True)
        (group.exp(tau) ** 2).sum().backward()
        assert torch.isfinite(tau.grad).all()
        g = group.identity(2).requires_grad_(True)
        group.log(g).sum().backward()
        assert torch.isfinite(g.grad).all()


class LieGroupContract(_LieGroupAlgebraChecks):
    """Generic tests for a :class:`mcvae_framework.interfaces.LieGroup` plugin.

    Subclass it in a ``Test*`` class and set :attr:`group_config`.
    """

    # ------------------------------------------------------------------ the action

    def test_act_gradcheck(self, group):
        gen = torch.Generator().manual_seed(11)
        images = torch.rand(3, 2, 6, 6, generator=gen, dtype=torch.float64, requires_grad=True)
        # not at the identity: there every sample lands on a pixel centre, where bilinear
        # interpolation has a kink and only one-sided derivatives exist
        tau = self.random_tau(group, 3, seed=11, scale=0.5, special_rows=False).requires_grad_(True)
        assert torch.autograd.gradcheck(lambda t, x: group.act(x, group.exp(t)), (tau, images))

    def test_act_identity_is_exact(self, group):
        for dtype in (torch.float32, torch.float64):
            for size in (28, 33):
                x = torch.rand(3, 2, size, size, generator=torch.Generator().manual_seed(size), dtype=dtype)
                out = group.act(x, group.identity(3, dtype=dtype))
                assert torch.equal(out, x), f"act(identity) changed a {dtype} {size}x{size} image"
                assert torch.equal(group.act(x, group.exp(torch.zeros(3, group.dim, dtype=dtype))), x)

    def test_act_moves_content_at_p_to_g_p(self, group):
        p = torch.tensor([0.2, -0.1], dtype=torch.float64)
        x = self.blob_image(centre=tuple(p.tolist()), width=0.1, size=64).expand(6, 1, 64, 64)
        g = group.exp(self.random_tau(group, 6, seed=12, scale=0.3))
        out = group.act(x, g)
        px, py = _pixel_centres(64, torch.float64)
        mass = out.sum(dim=(1, 2, 3))
        centroid = torch.stack(((out * px).sum(dim=(1, 2, 3)) / mass, (out * py).sum(dim=(1, 2, 3)) / mass), dim=-1)
        expected = (g[:, :2, :2] @ p + g[:, :2, 2])
        assert _max_err(centroid, expected) < 0.01, (centroid, expected)

    def _central(self, images: torch.Tensor) -> torch.Tensor:
        s = images.shape[-1]
        lo, hi = s // 4, s - s // 4
        return images[..., lo:hi, lo:hi]

    def test_act_composition(self, group):
        x = self.smooth_image().expand(6, 1, self.image_size, self.image_size)
        g1 = group.exp(self.random_tau(group, 6, seed=13, scale=0.3))
        g2 = group.exp(self.random_tau(group, 6, seed=14, scale=0.3))
        twice = group.act(group.act(x, g2), g1)
        once = group.act(x, group.compose(g1, g2))
        assert _max_err(self._central(twice), self._central(once)) < self.act_tolerance

    def test_act_inverse(self, group):
        x = self.smooth_image().expand(6, 1, self.image_size, self.image_size)
        g = group.exp(self.random_tau(group, 6, seed=15, scale=0.3))
        back = group.act(group.act(x, g), group.inverse(g))
        assert _max_err(self._central(back), self._central(x)) < self.act_tolerance

    def test_act_broadcasts_one_element(self, group):
        x = torch.rand(4, 1, 16, 16, dtype=torch.float64)
        g = group.exp(self.random_tau(group, 2, seed=16))[1:]
        assert _max_err(group.act(x, g), group.act(x, g.expand(4, 3, 3))) == 0.0

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
        lp.sum().backward()
        assert torch.isfinite(tau.grad).all()
        # a proper prior is not flat forever: far away it is less likely than at zero
        assert lp[-1] < group.log_prior(torch.zeros(1, group.dim, dtype=torch.float64))[0]

    def test_distance(self, group):
        g1 = group.exp(self.random_tau(group, 16, seed=19))
        g2 = group.exp(self.random_tau(group, 16, seed=20))
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
        g = group.exp(self.random_tau(group, 4, seed=21))
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
        d = group.distance(group.exp(self.random_tau(group, 16, seed=19)), group.exp(self.random_tau(group, 16, seed=20)))
        assert (d[rotation] <= 180 + 1e-9).all()
        for i in self._angle_columns(group):
            tau = torch.zeros(2, group.dim, dtype=torch.float64)
            tau[0, i], tau[1, i] = math.radians(170.0), math.radians(-170.0)
            rot = group.distance(group.exp(tau[:1]), group.exp(tau[1:]))[rotation]
            assert abs(rot.item() - 20.0) < 1e-6, f"{rotation} must wrap around the circle"
        assert half is not None, f"a group with rotation_error {rotation!r} needs half_turn()"
        e = group.identity(1, dtype=torch.float64)
        assert half.shape == (1, 3, 3)
        assert _max_err(group.compose(half, half), e) < self.atol, "half_turn twice is not the identity"
        assert abs(group.distance(half, e)[rotation].item() - 180.0) < 1e-6, "half_turn does not turn by 180 degrees"
        # composing with it turns every pose by half a turn
        g = group.exp(self.random_tau(group, 4, seed=22))
        turned = group.distance(group.compose(g, half.expand(4, 3, 3)), g)[rotation]
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
        assert back.shape == (8, 3, 3) and _max_err(back, g) < self.atol, "from_geomstats_point does not invert geomstats_point"
        m = bridge.modules()
        with bridge.float64_scope():
            belongs = bridge.to_torch(space.belongs(bridge.to_backend(points, m)))
        assert bool(belongs.all()), f"geomstats' {bridge.space_name(space)} does not accept the group's elements: {belongs.tolist()}"
        # the geomstats mean of elements spread around a centre lands near that centre
        centre = group.exp(self.random_tau(group, 1, seed=24, scale=0.5, special_rows=False))[0]
        spread = group.exp(self.random_tau(group, 6, seed=25, scale=0.02, special_rows=False))
        mean = bridge.space_mean(group, space, group.compose(centre.expand(6, 3, 3), spread), centre)
        assert torch.get_default_dtype() == dtype
        assert mean.shape == (3, 3) and _max_err(mean, centre) < 0.1, (mean, centre)

    # ------------------------------------------------------------------ dtype and device

    @pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_dtype_and_device_are_kept(self, group, dtype, device):
        tau = self.random_tau(group, 4, dtype=dtype).to(device)
        g = group.exp(tau)
        x = torch.rand(4, 1, 12, 12, dtype=dtype, device=device)
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
        self._raises_naming(bad.shape, group.act, torch.zeros(3, 1, 8, 8), bad)

    def test_bad_images(self, group):
        g = group.identity(2)
        for bad in (torch.zeros(2, 8, 8), torch.zeros(2, 1, 8, 6), torch.zeros(1, 2, 1, 8, 8)):
            self._raises_naming(bad.shape, group.act, bad, g)
        # one element per image, or a single element for all
        self._raises_naming(g.shape, group.act, torch.zeros(3, 1, 8, 8), g)
