"""The first part of :class:`~mcvae_framework.testing.LieGroupContract`: its settings,
fixtures and helpers, and the checks of the group's algebra (shapes, axioms,
``exp``/``log``). See :mod:`mcvae_framework.testing.group_contract` for the whole kit.

Random elements include every component of a group with a discrete part
(``element(tau, k)`` with ``k`` drawn too), and the test data is of the kind the group
moves (``(N, C, S, S)`` images, or ``(N, C, S, S, S)`` volumes for a group whose
``data_kind`` is ``"volume"``).
"""

from __future__ import annotations

import math

import pytest
import torch

from mcvae_framework import build


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item() if a.numel() else 0.0


def _pixel_centres(size: int, dtype, spatial: int = 2) -> tuple[torch.Tensor, ...]:
    """Normalised ``(x, y)`` (``(x, y, z)`` for volumes) of every pixel centre
    (affine_grid, align_corners=False); each ``(S,) * spatial``, indexed ``[z,] y, x``."""
    c = (2 * torch.arange(size, dtype=dtype) + 1) / size - 1
    grids = torch.meshgrid(*[c] * spatial, indexing="ij")
    return tuple(reversed(grids))


class _LieGroupAlgebraChecks:
    """Settings, fixtures, helpers and the algebraic checks of :class:`LieGroupContract`."""

    #: the group's config section, e.g. ``{"type": "se2", "shift": 0.2}`` (required).
    group_config: dict | None = None
    #: std of the non-angle coordinates of the random ``tau`` used by the algebraic checks.
    coordinate_std: float = 0.5
    #: side of the smooth test images used by the action checks (volumes: ``volume_size``).
    image_size: int = 64
    #: side of the smooth test volumes, for a group that moves volumes.
    volume_size: int = 40
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
    def n_components(group) -> int:
        return int(getattr(group, "n_components", 1) or 1)

    def random_components(self, group, n: int, seed: int = 0) -> torch.Tensor | None:
        """``(n,)`` seeded components (the first row the identity's), ``None`` for a connected group."""
        if self.n_components(group) == 1:
            return None
        components = torch.randint(self.n_components(group), (n,), generator=torch.Generator().manual_seed(seed + 99))
        components[0] = 0
        return components

    def random_elements(self, group, n: int, seed: int = 0, dtype=torch.float64, scale: float = 1.0,
                        special_rows: bool = True) -> torch.Tensor:
        """``element(random_tau, random component)``: ``exp(random_tau)`` for a connected group."""
        tau = self.random_tau(group, n, seed, dtype, scale, special_rows)
        return group.element(tau, self.random_components(group, n, seed))

    @staticmethod
    def _names(group) -> tuple[str, ...]:
        names = tuple(getattr(group, "coordinate_names", ()) or ())
        return names if len(names) == group.dim else ()

    def _angle_columns(self, group) -> list[int]:
        return [i for i, name in enumerate(self._names(group)) if name == "theta"]

    @staticmethod
    def spatial(group) -> int:
        """2 for a group that moves images, 3 for one that moves volumes."""
        return 3 if getattr(group, "data_kind", "image") == "volume" else 2

    def data_shape(self, group, n: int, channels: int, size: int) -> tuple[int, ...]:
        """``(n, channels) + (size,) * spatial``: a batch of the kind the group moves."""
        return (n, channels) + (size,) * self.spatial(group)

    def data_size(self, group) -> int:
        return self.volume_size if self.spatial(group) == 3 else self.image_size

    def blob_image(self, centre=(0.0, 0.0), width: float = 0.25, dtype=torch.float64, size=None,
                   spatial: int = 2) -> torch.Tensor:
        """``(1, 1) + (S,) * spatial`` Gaussian blob at normalised ``centre`` (x, y[, z])."""
        coords = _pixel_centres(size or self.image_size, dtype, spatial)
        centre = tuple(centre) + (0.0,) * (spatial - len(centre))
        blob = torch.exp(-sum((x - c) ** 2 for x, c in zip(coords, centre)) / (2 * width**2))
        return blob[None, None]

    def smooth_image(self, dtype=torch.float64, size=None, spatial: int = 2) -> torch.Tensor:
        """``(1, 1) + (S,) * spatial`` smooth pattern without symmetries (three blobs off the
        centre), so that every move changes it, while two resamplings still agree closely
        (wider blobs in a volume, where trilinear sampling blurs along one more axis)."""
        size = size or self.image_size
        w = 1.0 if spatial == 2 else 1.5
        return (
            self.blob_image((0.3, 0.1, 0.2), 0.2 * w, dtype, size, spatial)
            + 0.7 * self.blob_image((-0.2, -0.25, -0.1), 0.25 * w, dtype, size, spatial)
            + 0.4 * self.blob_image((-0.1, 0.3, 0.0), 0.15 * w, dtype, size, spatial)
        )

    # ------------------------------------------------------------------ shapes

    def test_shapes(self, group):
        assert isinstance(group.dim, int) and (group.dim >= 1 or self.n_components(group) > 1), \
            "a group needs coordinates (dim >= 1) or a discrete part (n_components > 1)"
        shape = tuple(getattr(group, "element_shape", (3, 3)))
        tau = self.random_tau(group, 5)
        g = group.exp(tau)
        assert g.shape == (5, *shape)
        assert group.log(g).shape == (5, group.dim)
        assert group.identity(4).shape == (4, *shape)
        assert group.log_prior(tau).shape == (5,)
        assert group.sample(7).shape == (7, group.dim)

    # ------------------------------------------------------------------ axioms

    def test_identity_element(self, group):
        g = self.random_elements(group, 8)
        e = group.identity(8, dtype=torch.float64)
        assert _max_err(group.compose(e, g), g) < self.atol
        assert _max_err(group.compose(g, e), g) < self.atol
        assert _max_err(group.exp(torch.zeros(3, group.dim, dtype=torch.float64)), group.identity(3, dtype=torch.float64)) < self.atol
        assert _max_err(group.log(e), torch.zeros(8, group.dim, dtype=torch.float64)) < self.atol

    def test_inverse(self, group):
        g = self.random_elements(group, 8)
        e = group.identity(8, dtype=torch.float64)
        assert _max_err(group.compose(g, group.inverse(g)), e) < self.atol
        assert _max_err(group.compose(group.inverse(g), g), e) < self.atol
        if getattr(group, "exponential_coordinates", True):
            # the inverse of exp(tau) is exp(-tau)
            tau = self.random_tau(group, 8, seed=1)
            assert _max_err(group.inverse(group.exp(tau)), group.exp(-tau)) < self.atol

    def test_associativity(self, group):
        a, b, c = (self.random_elements(group, 6, seed=s) for s in (1, 2, 3))
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

    def _needs_coordinates(self, group):
        if group.dim == 0:
            pytest.skip("a finite group (dim 0) has no coordinates to differentiate")

    def test_exp_gradcheck(self, group):
        self._needs_coordinates(group)
        tau = self.random_tau(group, 5, seed=9).requires_grad_(True)
        assert torch.autograd.gradcheck(group.exp, (tau,))

    def test_log_gradcheck(self, group):
        self._needs_coordinates(group)
        g = group.exp(self.random_tau(group, 5, seed=10)).requires_grad_(True)
        assert torch.autograd.gradcheck(group.log, (g,))

    def test_gradients_finite_at_identity(self, group):
        self._needs_coordinates(group)
        tau = torch.zeros(2, group.dim, dtype=torch.float32, requires_grad=True)
        (group.exp(tau) ** 2).sum().backward()
        assert torch.isfinite(tau.grad).all()
        g = group.identity(2).requires_grad_(True)
        group.log(g).sum().backward()
        assert torch.isfinite(g.grad).all()
