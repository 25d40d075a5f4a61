"""The built-in groups: contract kit, geomstats agreement, closed-form details, bad input."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from mcvae_framework import ConfigError, build
from mcvae_framework.cli import cli
from mcvae_framework.interfaces import AffineGroup2D
from mcvae_framework.testing import LieGroupContract
from mcvae_framework.testing import geomstats_reference as ref

TAGS = ("so2", "se2", "scale_rotation", "sim2", "affine2")


# ---------------------------------------------------------------- the contract kit, x5


class TestSO2Contract(LieGroupContract):
    group_config = {"type": "so2"}


class TestSE2Contract(LieGroupContract):
    group_config = {"type": "se2", "shift": 0.2}


class TestScaleRotationContract(LieGroupContract):
    group_config = {"type": "scale_rotation", "prior": "uniform"}


class TestSim2Contract(LieGroupContract):
    group_config = {"type": "sim2", "angle_deg": [-90, 90], "shift": 0.25, "prior": "uniform"}


class TestAffine2Contract(LieGroupContract):
    group_config = {"type": "affine2", "stretch": [-0.3, 0.3], "stretch_diag": [-0.1, 0.2], "prior": "uniform"}


# ---------------------------------------------------------------- geomstats agreement


def _coordinates(n=64, seed=0, max_angle=math.pi):
    """float64 (theta, log_scale, u) with exact zeros, tiny values, both sides of the
    series radius, and angles up to ``max_angle``."""
    gen = torch.Generator().manual_seed(seed)
    theta = (torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * max_angle
    log_scale = torch.randn(n, generator=gen, dtype=torch.float64) * 0.7
    u = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    special = torch.tensor([0.0, 1e-12, 1e-7, 9.9e-4, 1.01e-3, 0.099, 0.101, max_angle], dtype=torch.float64)
    theta[: len(special)] = special
    log_scale[: len(special)] = special.flip(0) * 0.5
    log_scale[0] = 0.0
    return theta, log_scale, u


def _few_inner(theta, count=12):
    """Indices of the first ``count`` angles away from +-pi: scipy's ``logm`` (behind
    geomstats' logarithms) may pick another branch near pi, and costs milliseconds per
    matrix, so logarithms are compared on a dozen elements, the special ones included."""
    return torch.nonzero(theta.abs() < math.pi - 0.1).flatten()[:count]


@pytest.fixture(scope="module")
def geomstats():
    dtype = torch.get_default_dtype()
    modules = ref.import_geomstats()
    assert torch.get_default_dtype() == dtype, "importing geomstats changed torch's default dtype"
    return modules


def test_so2_matches_geomstats(geomstats):
    theta, _, _ = _coordinates()
    g = build("group", {"type": "so2"})
    mats = g.exp(theta[:, None])
    assert (mats[:, :2, :2] - ref.so2_exp(theta)).abs().max() < 1e-6
    assert (mats - ref.matrix_exp(ref.planar_algebra_matrix(theta))).abs().max() < 1e-6
    inner = _few_inner(theta)
    assert (g.log(mats)[inner, 0] - ref.so2_log(mats[inner, :2, :2])).abs().max() < 1e-6


def test_se2_matches_geomstats(geomstats):
    theta, _, u = _coordinates()
    g = build("group", {"type": "se2"})
    tau = torch.cat((theta[:, None], u), dim=1)
    mats = g.exp(tau)
    assert (mats - ref.se2_exp(tau)).abs().max() < 1e-6
    assert (mats - ref.matrix_exp(ref.planar_algebra_matrix(theta, u=u))).abs().max() < 1e-6
    inner = _few_inner(theta)
    assert (g.log(mats)[inner] - ref.se2_log(mats[inner])).abs().max() < 1e-6


@pytest.mark.parametrize("tag", ["scale_rotation", "sim2"])
def test_scaled_groups_match_the_matrix_exponential(geomstats, tag):
    theta, log_scale, u = _coordinates()
    g = build("group", {"type": tag})
    if tag == "scale_rotation":
        tau, u = torch.stack((theta, log_scale), dim=1), 0 * u
    else:
        tau = torch.cat((theta[:, None], log_scale[:, None], u), dim=1)
    mats = g.exp(tau)
    assert (mats - ref.matrix_exp(ref.planar_algebra_matrix(theta, log_scale, u))).abs().max() < 1e-6
    inner = _few_inner(theta)
    logm = ref.matrix_log(mats[inner])
    expected = torch.stack((logm[:, 1, 0], logm[:, 0, 0], logm[:, 0, 2], logm[:, 1, 2]), dim=1)[:, : g.dim]
    assert (g.log(mats)[inner] - expected).abs().max() < 1e-6


def test_geomstats_reference_restores_the_default_dtype(geomstats):
    before = torch.get_default_dtype()
    ref.se2_exp(torch.zeros(2, 3, dtype=torch.float64))
    ref.matrix_log(torch.eye(3, dtype=torch.float64)[None])
    assert torch.get_default_dtype() == before
    other = "numpy" if geomstats.backend == "pytorch" else "pytorch"
    with pytest.raises(RuntimeError, match="already imported"):
        ref.import_geomstats(other)


# ---------------------------------------------------------------- closed-form details


def test_se2_translation_is_v_theta_u_not_u():
    g = build("group", {"type": "se2"})
    mats = g.exp(torch.tensor([[math.pi / 2, 1.0, 0.0]], dtype=torch.float64))
    assert torch.allclose(mats[0, :2, 2], torch.tensor([2 / math.pi, 2 / math.pi], dtype=torch.float64))


def test_sim2_translation_is_phi_w_u():
    # theta = 0: V = (e^s - 1) / s
    g = build("group", {"type": "sim2"})
    mats = g.exp(torch.tensor([[0.0, math.log(3.0), 1.0, -2.0]], dtype=torch.float64))
    assert torch.allclose(mats[0, :2, 2], torch.tensor([1.0, -2.0], dtype=torch.float64) * 2 / math.log(3.0))
    assert torch.allclose(mats[0, :2, :2], 3 * torch.eye(2, dtype=torch.float64))


@pytest.mark.parametrize("tag", ["se2", "sim2"])
def test_float32_gradients_are_accurate_across_the_series_switch(tag):
    # autograd in float32 vs float64 around the Taylor/exact switch and at 0
    g = build("group", {"type": tag})
    theta = torch.tensor([0.0, 1e-6, 1e-3, 0.05, 0.099, 0.101, 0.3, 1.0, 3.0], dtype=torch.float64)
    tau = torch.zeros(len(theta), g.dim, dtype=torch.float64)
    tau[:, 0] = theta
    tau[:, -2:] = torch.tensor([0.7, -0.4], dtype=torch.float64)
    if tag == "sim2":
        tau[:, 1] = theta * 0.5
    grads = {}
    for dtype in (torch.float32, torch.float64):
        t = tau.to(dtype).requires_grad_(True)
        g.exp(t)[:, :2, 2].sum().backward()
        grads[dtype] = t.grad.double()
    assert (grads[torch.float32] - grads[torch.float64]).abs().max() < 5e-6


def test_uniform_prior_is_flat_inside_the_ranges_and_normalised():
    g = build("group", {"type": "scale_rotation", "prior": "uniform", "angle_deg": [-90, 90], "log_scale": [-0.2, 0.4]})
    inside = torch.tensor([[0.0, 0.0], [1.5, 0.39], [-1.5, -0.19]], dtype=torch.float64)
    lp = g.log_prior(inside)
    assert torch.allclose(lp, lp[:1].expand(3))
    assert g.log_prior(torch.tensor([[2.0, 0.0]], dtype=torch.float64)) < lp[0]
    # integrate exp(log_prior) on a grid: a proper density
    th = torch.linspace(-8, 8, 801, dtype=torch.float64)
    s = torch.linspace(-4, 4, 401, dtype=torch.float64)
    grid = torch.cartesian_prod(th, s)
    mass = g.log_prior(grid).exp().sum() * (th[1] - th[0]) * (s[1] - s[0])
    assert abs(mass.item() - 1.0) < 1e-3


@pytest.mark.parametrize("prior", ["normal", "uniform"])
def test_se2_prior_is_a_proper_density(prior):
    g = build("group", {"type": "se2", "prior": prior, "angle_deg": [-45, 45], "shift": 0.2})
    th = torch.linspace(-6, 6, 121, dtype=torch.float64)
    u = torch.linspace(-3, 3, 61, dtype=torch.float64)
    grid = torch.cartesian_prod(th, u, u)
    mass = g.log_prior(grid).exp().sum() * (th[1] - th[0]) * (u[1] - u[0]) ** 2
    assert abs(mass.item() - 1.0) < 2e-3


def test_normal_prior_is_the_gaussian_density():
    g = build("group", {"type": "so2", "prior_angle_std_deg": 30})
    theta = torch.tensor([[0.0], [0.5], [-2.0]], dtype=torch.float64)
    expected = torch.distributions.Normal(0.0, math.radians(30)).log_prob(theta[:, 0])
    assert torch.allclose(g.log_prior(theta), expected)


def test_distance_units():
    g = build("group", {"type": "sim2"})
    a = g.exp(torch.tensor([[0.0, 0.0, 0.0, 0.0]], dtype=torch.float64))
    b = g.exp(torch.tensor([[math.radians(30), 0.0, 0.0, 0.0]], dtype=torch.float64))
    b[:, 0, 2] += 0.3
    b[:, :2, :2] *= 2.0
    d = g.distance(a, b)
    assert set(d) == {"rotation_deg", "translation", "log_scale"}
    assert g.primary_error == g.rotation_error == "rotation_deg"
    assert abs(d["rotation_deg"].item() - 30) < 1e-9
    assert abs(d["translation"].item() - 0.3) < 1e-9
    assert abs(d["log_scale"].item() - math.log(2)) < 1e-9
    assert set(build("group", {"type": "so2"}).distance(a, a)) == {"rotation_deg"}


def test_positive_angle_turns_clockwise_on_screen():
    # y points down in image coordinates: content right of the centre moves down
    g = build("group", {"type": "so2"})
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 7] = 1.0  # right of the centre
    out = g.act(x, g.exp(torch.tensor([[math.pi / 2]])))
    assert out[0, 0].argmax().item() == 7 * 9 + 4  # row 7, column 4: below the centre


# ---------------------------------------------------------------- configs and bad input


@pytest.mark.parametrize(
    "config, field, value",
    [
        ({"type": "so2", "angle_deg": [-200, 90]}, "angle_deg", "-200"),
        ({"type": "se2", "angle_deg": [90, -90]}, "angle_deg", "reversed"),
        ({"type": "se2", "shift": -0.1}, "shift", "-0.1"),
        ({"type": "sim2", "log_scale": [0.5, 0.1]}, "log_scale", "reversed"),
        ({"type": "so2", "shift": 0.1}, "shift", "unknown key"),
        ({"type": "scale_rotation", "prior": "flat"}, "prior", "flat"),
    ],
)
def test_bad_configs_name_the_field_and_value(config, field, value):
    with pytest.raises(ConfigError) as info:
        build("group", config)
    message = str(info.value)
    assert f"group.{field}" in message and value in message, message


def test_defaults_are_documented():
    for tag in TAGS:
        cls = type(build("group", {"type": tag}).config)
        for name, field in cls.model_fields.items():
            assert field.description, f"{tag}.{name} has no description"


def test_plugins_command_lists_the_groups():
    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 0, result.output
    group_lines = [line for line in result.output.splitlines() if line.strip().startswith("group ")]
    assert group_lines, result.output
    listed = {tag.strip() for line in group_lines for tag in line.split(None, 1)[1].split(",")}
    assert set(TAGS) <= listed


def test_importing_the_plugin_keeps_the_default_dtype_and_skips_geomstats():
    code = (
        "import sys, torch\n"
        "before = torch.get_default_dtype()\n"
        "import mcvae_builtins.groups\n"
        "from mcvae_framework import build\n"
        f"for tag in {TAGS!r}:\n"
        "    g = build('group', {'type': tag}); g.act(torch.rand(2, 1, 8, 8), g.exp(g.sample(2)))\n"
        "assert torch.get_default_dtype() == before, torch.get_default_dtype()\n"
        "assert 'geomstats' not in sys.modules, 'a group plugin imported geomstats'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------- affine2


def _affine_coordinates(n=256, seed=0):
    gen = torch.Generator().manual_seed(seed)
    tau = torch.randn(n, 6, generator=gen, dtype=torch.float64) * 0.6
    tau[:, 0] = (torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi
    tau[0] = 0.0
    tau[1] = 1e-12
    tau[2, 2:4] = torch.tensor([1e-5, -2e-5])  # both sides of the series switch
    tau[3, 2:4] = torch.tensor([0.0101, 0.0])
    return tau


def _algebra(theta=None, log_scale=None, c=None, k=None, t=None, n=1):
    """3x3 algebra matrices of the one-parameter subgroups of affine2's chart."""
    z = torch.zeros(n, 3, 3, dtype=torch.float64)
    if theta is not None:
        z[:, 0, 1], z[:, 1, 0] = -theta, theta
    if log_scale is not None:
        z[:, 0, 0] += log_scale
        z[:, 1, 1] += log_scale
    if c is not None:
        z[:, 0, 0] += c
        z[:, 1, 1] -= c
        z[:, 0, 1] += k
        z[:, 1, 0] += k
    if t is not None:
        z[:, :2, 2] = t
    return z


def test_affine2_is_a_product_of_matrix_exponentials():
    # the chart of the second kind: T(t) . exp(theta J + s I) . exp(P), each factor the
    # matrix exponential of its own algebra element
    g = build("group", {"type": "affine2"})
    tau = _affine_coordinates()
    theta, s, c, k = tau[:, 0], tau[:, 1], tau[:, 2], tau[:, 3]
    n = len(tau)
    expected = (
        torch.linalg.matrix_exp(_algebra(t=tau[:, 4:], n=n))
        @ torch.linalg.matrix_exp(_algebra(theta=theta, log_scale=s, n=n))
        @ torch.linalg.matrix_exp(_algebra(c=c, k=k, n=n))
    )
    assert (g.exp(tau) - expected).abs().max() < 1e-6
    assert g.exponential_coordinates is False


def test_affine2_round_trips_on_its_pose_range_and_everywhere():
    g = build("group", {"type": "affine2", "angle_deg": [-180, 180], "log_scale": [-0.5, 0.5],
                        "stretch": [-0.5, 0.5], "stretch_diag": [-0.5, 0.5], "shift": 0.3})
    tau = g.sample(4096, torch.Generator().manual_seed(1), dtype=torch.float64)
    assert (g.log(g.exp(tau)) - tau).abs().max() < 1e-6
    tau = _affine_coordinates()
    assert (g.log(g.exp(tau)) - tau).abs().max() < 1e-10


def test_affine2_samples_each_coordinate_in_its_own_range():
    # every coordinate of the pose distribution is configured on its own, and read back
    # from the matrices (polar decomposition), not only from tau
    ranges = {"angle_deg": [-20.0, 50.0], "log_scale": [-0.1, 0.3], "stretch": [0.05, 0.25],
              "stretch_diag": [-0.3, -0.1], "shift": 0.05}
    g = build("group", {"type": "affine2", **ranges})
    tau = g.sample(4000, torch.Generator().manual_seed(2), dtype=torch.float64)
    back = g.log(g.exp(tau))
    expected = [
        (math.radians(ranges["angle_deg"][0]), math.radians(ranges["angle_deg"][1])),
        tuple(ranges["log_scale"]), tuple(ranges["stretch"]), tuple(ranges["stretch_diag"]),
        (-0.1, 0.1), (-0.1, 0.1),  # a shift of 5% of the side is 0.1 normalised units
    ]
    for i, (name, (lo, hi)) in enumerate(zip(g.coordinate_names, expected)):
        col = back[:, i]
        assert col.min() >= lo - 1e-9 and col.max() <= hi + 1e-9, (name, col.min(), col.max())
        width = hi - lo
        assert col.min() < lo + 0.02 * width and col.max() > hi - 0.02 * width, f"{name} does not fill its range"
    # the stretch columns are independent of each other and of the angle
    corr = torch.corrcoef(back[:, :4].T)
    assert (corr - torch.eye(4, dtype=corr.dtype)).abs().max() < 0.1


def test_affine2_log_covers_maps_the_lie_exponential_misses():
    # a half turn times a stretch has two distinct negative eigenvalues: no real matrix
    # logarithm, but the chart of the second kind reaches it
    g = build("group", {"type": "affine2"})
    m = torch.eye(3, dtype=torch.float64)[None].repeat(3, 1, 1)
    m[0, :2, :2] = torch.tensor([[-2.0, 0.0], [0.0, -0.5]])
    m[1, :2, :2] = torch.tensor([[1.0, 3.0], [0.0, 1.0]])  # a strong shear
    m[2, :2, :2] = torch.tensor([[-1.0, 0.2], [0.0, -1.0]])  # -1 Jordan block
    m[:, :2, 2] = torch.tensor([0.3, -0.1])
    tau = g.log(m)
    assert torch.isfinite(tau).all()
    assert (g.exp(tau) - m).abs().max() < 1e-12
    assert abs(abs(tau[0, 0].item()) - math.pi) < 1e-12  # the half turn is the rotation


def test_affine2_coordinates_mean_what_they_say():
    g = build("group", {"type": "affine2"})
    tau = torch.zeros(2, 6, dtype=torch.float64)
    tau[0, 2] = math.log(2.0)  # stretch: x doubled, y halved
    tau[1, 3] = math.log(2.0)  # along the diagonals
    m = g.exp(tau)
    assert torch.allclose(m[0, :2, :2], torch.diag(torch.tensor([2.0, 0.5], dtype=torch.float64)))
    diag = torch.tensor([1.0, 1.0], dtype=torch.float64) / math.sqrt(2)
    assert torch.allclose(m[1, :2, :2] @ diag, 2 * diag)
    assert abs(torch.linalg.det(m[1, :2, :2]).item() - 1) < 1e-12
    d = g.distance(m[:1], g.identity(1, dtype=torch.float64))
    assert set(d) == {"rotation_deg", "translation", "log_scale", "stretch"}
    assert abs(d["stretch"].item() - math.log(2.0)) < 1e-12 and d["rotation_deg"].item() < 1e-9


def test_affine2_moves_images_anisotropically():
    # a horizontal bar stretched along x gets longer and thinner (content at p goes to A p)
    g = build("group", {"type": "affine2"})
    x = torch.zeros(1, 1, 32, 32, dtype=torch.float64)
    x[0, 0, 15:17, 12:20] = 1.0
    tau = torch.zeros(1, 6, dtype=torch.float64)
    tau[0, 2] = math.log(1.5)
    out = g.act(x, g.exp(tau))
    cols = (out[0, 0].sum(0) > 0.1).sum().item()
    rows = (out[0, 0].sum(1) > 0.1).sum().item()
    assert cols > 10 and rows <= 3, (cols, rows)


def test_affine2_geomstats_mean_stays_in_the_group(geomstats):
    g = build("group", {"type": "affine2"})
    tau = _affine_coordinates(12)
    tau[:, 0] = tau[:, 0].clamp(-2.5, 2.5)  # scipy's logm branch near pi aside
    mats = g.exp(tau)
    # the group exponential barycenter of affine2's points in GL+(3) stays in the group
    from mcvae_framework import geomstats_bridge as bridge

    space = bridge.geomstats_space_of(g)
    assert bridge.space_name(space) == "GeneralLinear+(3)"
    around = mats[6] @ g.exp(tau[:6] * 0.05)
    mean = bridge.space_mean(g, space, around, around[0])
    assert torch.allclose(mean[2], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), atol=1e-12)
    assert (mean - mats[6]).abs().max() < 0.05
    # it is the fixed point m = m exp(mean log(m^-1 h)) of geomstats' own matrix logarithm
    step = ref.matrix_log(torch.linalg.inv(mean) @ around).mean(0)
    assert step.abs().max() < 1e-8


@pytest.mark.parametrize(
    "config, field, value",
    [
        ({"type": "affine2", "stretch": [0.3, -0.3]}, "stretch", "reversed"),
        ({"type": "affine2", "stretch_diag": [-3, 0.1]}, "stretch_diag", "-3"),
        ({"type": "affine2", "prior_stretch_std": 0}, "prior_stretch_std", "0"),
    ],
)
def test_affine2_bad_configs_name_the_field(config, field, value):
    with pytest.raises(ConfigError) as info:
        build("group", config)
    message = str(info.value)
    assert f"group.{field}" in message and value in message, message


# ---------------------------------------------------------------- geomstats spaces


@pytest.mark.parametrize("tag, name", [("so2", "SpecialOrthogonal(2)"), ("se2", "SpecialEuclidean(2)"),
                                       ("scale_rotation", "GeneralLinear+(2)"), ("sim2", "GeneralLinear+(3)"),
                                       ("affine2", "GeneralLinear+(3)")])
def test_builtin_groups_name_their_geomstats_space(geomstats, tag, name):
    from mcvae_framework import geomstats_bridge as bridge

    g = build("group", {"type": tag})
    space = bridge.geomstats_space_of(g)
    assert bridge.space_name(space) == name
    expected = "FrechetMean" if tag in ("so2", "se2") else "ExponentialBarycenter"
    assert bridge.estimator_name(space) == expected


# ---------------------------------------------------------------- a group without rotation


class _Shear(AffineGroup2D):
    """Horizontal shears ``[[1, k], [0, 1]]``: no rotation, no translation, no scale."""

    name = "shear_test"
    dim = 1
    coordinate_names = ("k",)
    has_translation = False

    def __init__(self, config=None):
        self.config = config

    def exp(self, tau):
        self.check_tau(tau)
        g = torch.eye(3, dtype=tau.dtype, device=tau.device).repeat(len(tau), 1, 1)
        return g.index_put((torch.arange(len(tau)), torch.tensor(0), torch.tensor(1)), tau[:, 0])

    def log(self, g):
        self.check_matrices(g)
        return g[:, 0, 1:2].clone()

    def sample(self, n, generator=None, *, dtype=None, device=None):
        return torch.rand(n, 1, generator=generator, dtype=dtype or torch.get_default_dtype(), device=device) - 0.5

    def log_prior(self, tau):
        self.check_tau(tau)
        return -0.5 * (tau**2).sum(-1)


def test_affine_base_reports_no_rotation_for_a_group_without_one():
    group = _Shear()
    a, b = group.exp(torch.tensor([[0.0], [0.5]], dtype=torch.float64)).split(1)
    d = group.distance(a, b)
    assert set(d) == {"matrix"} and abs(d["matrix"].item() - 0.5) < 1e-12
    assert group.has_rotation is False and group.rotation_error is None and group.half_turn() is None
    assert group.primary_error == "matrix"
    # a translation group: translation is its primary error, and no rotation is invented
    group.has_translation = True
    assert set(group.distance(a, b)) == {"translation"} and group.primary_error == "translation"


def test_moved_images_are_padded_with_their_own_background():
    """An image on a black background is padded with 0 exactly as zero padding does; a
    particle standardised onto a grey, noisy background turned by 45 degrees gains corners at
    its background level, not black ones that no unturned image has."""
    from mcvae_framework.interfaces import background_level

    group = build("group", {"type": "se2", "angle_deg": [-180, 180]})
    turn = group.exp(torch.tensor([[math.pi / 4, 0.0, 0.0]]))
    black = torch.zeros(1, 1, 16, 16)
    black[..., 5:11, 6:10] = 1.0
    grid = group.sampling_grid(group._inverse_rows(turn), 16, 16)
    zero_padded = torch.nn.functional.grid_sample(black, grid, mode="bilinear", padding_mode="zeros",
                                                  align_corners=False)
    assert torch.equal(group.act(black, turn), zero_padded)
    grey = 0.5 + 0.1 * torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    level = background_level(grey)
    assert level.shape == (1, 1, 1, 1) and abs(float(level) - 0.5) < 0.05
    turned = group.act(grey, turn)
    assert abs(float(turned[..., 0, 0]) - float(level)) < 1e-6  # a corner that came from outside the frame
    assert turned.min() > 0.1
