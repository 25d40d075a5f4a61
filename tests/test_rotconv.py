"""The rotation-equivariant encoder ``rotconv``: the contract kit, exact invariance under
quarter turns, bounded error under the other rotations of C_N, the orientation readout,
and the model reading it with every built-in group."""

from __future__ import annotations

import math

import pytest
import torch

from mcvae_framework import build, build_model, validate_config
from mcvae_framework.testing import EncoderContract
from mcvae_framework.train.trainer import load_trained_model, train

#: relative change of the pooled features under a rotation by 2 pi / N (not a quarter
#: turn) of a smooth image, for an untrained encoder: turned filters and images are
#: resampled, so this is not exact (measured: 1.6% to 3.3% for N = 3, 6, 8, 16).
SMOOTH_TOLERANCE = 0.08


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


class TestRotConvEncoder(EncoderContract):
    encoder_config = {"type": "rotconv", "channels": [4, 8], "feature_dim": 16}
    image_shapes = ((1, 28, 28), (3, 40, 40))  # the kit's 64x64 default costs N times a plain network's


class TestRotConvEncoderOtherChoices(EncoderContract):
    encoder_config = {"type": "rotconv", "rotations": 6, "channels": [3, 4, 4], "group_pool": "mean",
                      "batch_norm": False, "activation": "elu", "feature_dim": None, "orientation": False,
                      "lift_halvings": 1}
    image_shapes = ((1, 27, 27), (2, 8, 8))


def encoder(n: int, side: int = 28, **settings):
    torch.manual_seed(0)
    return build("encoder", {"type": "rotconv", "rotations": n, **settings}, image_shape=(1, side, side)).eval()


def quarter_turn(x: torch.Tensor) -> torch.Tensor:
    """A quarter turn in the groups' convention (clockwise as displayed), exactly."""
    return torch.rot90(x, -1, dims=(-2, -1))


def rotate(x: torch.Tensor, angle: float) -> torch.Tensor:
    group = build("group", {"type": "so2"})
    return group.act(x, group.exp(torch.full((len(x), 1), angle)))


def arrows(n: int, side: int = 28, seed: int = 0) -> torch.Tensor:
    """Smooth images with one orientation: a blurred bar with a blob at one end."""
    generator = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, side), torch.linspace(-1, 1, side), indexing="ij")
    out = torch.zeros(n, 1, side, side)
    for i in range(n):
        a = 2 * math.pi * torch.rand(1, generator=generator).item()
        along, across = xs * math.cos(a) + ys * math.sin(a), -xs * math.sin(a) + ys * math.cos(a)
        bar = torch.exp(-across**2 / (2 * 0.08**2) - along**2 / (2 * 0.45**2))
        head = torch.exp(-((along - 0.35) ** 2 + across**2) / (2 * 0.15**2))
        out[i, 0] = (bar + head).clamp(0, 1)
    return out


def angle_gap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``|a - b|`` on the circle, in radians."""
    return ((a - b + math.pi) % (2 * math.pi) - math.pi).abs()


def test_a_quarter_turn_is_the_groups_rotation_by_90_degrees():
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(rotate(x, math.pi / 2), quarter_turn(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("n, side", [(4, 28), (8, 28), (8, 27), (16, 40)])
def test_pooled_features_are_invariant_under_quarter_turns(n, side):
    enc = encoder(n, side)
    x = torch.rand(3, 1, side, side)  # not smooth: exactness owes nothing to the images
    with torch.no_grad():
        features = enc(x)
        for turns in (1, 2, 3):
            x = quarter_turn(x)
            torch.testing.assert_close(enc(x), features, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n", [3, 6, 8, 16])
def test_pooled_features_change_little_under_the_other_rotations(n):
    enc = encoder(n)
    x = arrows(16)
    with torch.no_grad():
        features, turned = enc(x), enc(rotate(x, 2 * math.pi / n))
    relative = (turned - features).norm(dim=1) / features.norm(dim=1)
    assert relative.max() < SMOOTH_TOLERANCE, f"N={n}: relative change up to {relative.max():.3f}"


@pytest.mark.parametrize("n", [4, 8, 16])
def test_orientation_moves_by_a_quarter_turn_exactly(n):
    enc = encoder(n)
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        logits, turned_logits = enc.orientation_logits(x), enc.orientation_logits(quarter_turn(x))
    torch.testing.assert_close(turned_logits, logits.roll(n // 4, dims=1), atol=1e-6, rtol=1e-5)
    # Images with an orientation: noise scores every rotation nearly alike, and a tie
    # within float error may pick either bin.
    x = arrows(8)
    with torch.no_grad():
        before = enc.forward_with_pose(x).orientation
        after = enc.forward_with_pose(quarter_turn(x)).orientation
    assert angle_gap(after, before + math.pi / 2).max() < 1e-4


def test_orientation_scores_roll_by_one_bin_under_a_rotation_by_one_bin():
    """Modulo 2 pi / N: the scores of the N rotations of an image turned by 45 degrees
    (resampled, not exact) are its own scores rolled by one bin, better matched by that
    shift than by any other. (Untrained encoders with more, narrower bins have scores
    too alike from one bin to the next for this to hold image by image.)"""
    n = 8
    enc = encoder(n)
    x = arrows(16)
    with torch.no_grad():
        logits, turned = enc.orientation_logits(x), enc.orientation_logits(rotate(x, 2 * math.pi / n))
    mismatch = torch.stack([(turned - logits.roll(s, dims=1)).pow(2).sum(1) for s in range(n)], dim=1)
    best_shift = mismatch.argmin(1)
    assert (best_shift == 1).float().mean() >= 0.9, f"best shifts {best_shift.tolist()}"


def test_refined_orientation_follows_rotations_between_bins():
    enc = encoder(8)
    x = arrows(32)
    for degrees in (20, 45):
        angle = math.radians(degrees)
        with torch.no_grad():
            before = enc.forward_with_pose(x).orientation
            after = enc.forward_with_pose(rotate(x, angle)).orientation
        gap = angle_gap(after, before + angle)
        assert math.degrees(gap.median()) < 15, f"{degrees} deg: median error {math.degrees(gap.median()):.1f} deg"


def test_readout_angle_refines_within_the_best_bin():
    from mcvae_builtins.networks.rotconv import readout_angle

    bins = torch.arange(8, dtype=torch.float32)
    # a parabola peaking at 2.25 bins: the refinement finds it exactly
    logits = -(bins - 2.25) ** 2
    assert readout_angle(logits[None]).item() == pytest.approx(2.25 * 2 * math.pi / 8, abs=1e-5)
    # the wrap-around: a peak at bin 7.5 is half a bin before 0 (within (-pi, pi])
    circular = -torch.minimum((bins - 7.5).abs(), 8 - (bins - 7.5).abs()) ** 2
    assert readout_angle(circular[None]).item() == pytest.approx(-0.5 * 2 * math.pi / 8, abs=1e-5)


def test_soft_readout_is_the_circular_mean_and_rolls_with_the_scores():
    from mcvae_builtins.networks.rotconv import soft_readout_angle

    n = 8
    bins = torch.arange(n, dtype=torch.float64)
    # two equal scores at bins 1 and 2: the circular mean lies halfway, at 1.5 bins
    logits = torch.full((n,), -30.0, dtype=torch.float64)
    logits[1] = logits[2] = 0.0
    assert soft_readout_angle(logits[None]).item() == pytest.approx(1.5 * 2 * math.pi / n, abs=1e-9)
    # rolling the scores by k turns the angle by exactly 2 pi k / N, across the wrap too
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(16, n, generator=generator, dtype=torch.float64) * 3
    angle = soft_readout_angle(scores)
    for k in range(1, n):
        assert angle_gap(soft_readout_angle(scores.roll(k, dims=1)), angle + 2 * math.pi * k / n).max() < 1e-9
    # against the definition: atan2 of the softmax-weighted sines and cosines
    weights = torch.softmax(scores, dim=1)
    phases = 2 * math.pi * bins / n
    expected = torch.atan2(weights @ torch.sin(phases), weights @ torch.cos(phases))
    torch.testing.assert_close(angle, expected)


def test_soft_readout_passes_gradients_across_bins_and_none_through_a_flat_score():
    from mcvae_builtins.networks.rotconv import soft_readout_angle

    n = 8
    # the best bin is 0, the target three bins away: descending the pose loss on the scores
    # alone carries the soft angle there (the peak readout's gradient moves it within its bin)
    logits = torch.tensor([[4.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]], requires_grad=True)
    target = 3 * 2 * math.pi / n
    optimizer = torch.optim.SGD([logits], lr=2.0)
    for _ in range(200):
        optimizer.zero_grad()
        (1 - torch.cos(soft_readout_angle(logits) - target)).sum().backward()
        optimizer.step()
    assert math.degrees(angle_gap(soft_readout_angle(logits), torch.tensor(target)).item()) < 1
    # equal scores: the angle is noise, and no (unbounded) gradient comes out of it
    flat = torch.zeros(2, n, requires_grad=True)
    soft_readout_angle(flat).sum().backward()
    assert torch.isfinite(flat.grad).all() and flat.grad.abs().max() == 0


def test_the_soft_readout_turns_with_the_image():
    # in float64: an untrained encoder's scores are nearly alike, and the circular mean of
    # nearly alike weights magnifies float32 rounding
    enc = encoder(8, readout="soft").double()
    x = arrows(8).double()
    with torch.no_grad():
        before = enc.forward_with_pose(x).orientation
        after = enc.forward_with_pose(quarter_turn(x)).orientation
    assert angle_gap(after, before + math.pi / 2).max() < 1e-4


def test_kernel_sides_must_be_odd():
    with pytest.raises(Exception, match="odd"):
        build("encoder", {"type": "rotconv", "kernel_size": 4}, image_shape=(1, 28, 28))


GROUPS = [{"type": "so2", "angle_deg": [-180, 180]}, {"type": "se2"}, {"type": "scale_rotation"},
          {"type": "sim2"}, {"type": "affine2"}, None]


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g["type"] if g else "no-group")
def test_the_model_reads_the_orientation_with_every_builtin_group(group):
    config = validate_config({
        "data": {"type": "digits", "limit": 8},
        "group": group,
        "encoder": {"type": "rotconv", "channels": [4, 8], "feature_dim": 16},
        "decoder": {"type": "mlp", "hidden": [16]},
        "prior": {"type": "gmm", "n_components": 3} if group else {"type": "standard_normal"},
        "model": {"z_cluster_dim": 2, "z_style_dim": 1, "canonicalize": False},
        "loss": {"mode": "unsupervised" if group else "plain"},
    })
    torch.manual_seed(0)
    model = build_model(config, image_shape=(1, 28, 28)).eval()
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        enc, turned = model.encode(x), model.encode(quarter_turn(x))
    # z_c and z_v read the invariant features only
    torch.testing.assert_close(turned.z_cluster.mean, enc.z_cluster.mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(turned.z_style.mean, enc.z_style.mean, atol=1e-5, rtol=1e-5)
    if group is None:
        assert enc.tau is None and not model.reads_pose
        return
    # an untrained pose head adds nothing: its angle is the readout, which turns with x
    readout = model.encoder.forward_with_pose(x).orientation
    theta = model.group.angle_coordinates[0]
    assert angle_gap(enc.tau.mean[:, theta], readout).max() < 1e-5
    assert angle_gap(turned.tau.mean[:, theta], readout + math.pi / 2).max() < 1e-4


def test_a_tiny_run_trains_saves_and_reloads(tmp_path):
    config = {
        "data": {"type": "digits", "limit": 64, "transform": {"group": "so2", "angle_deg": [-180, 180], "seed": 0}},
        "group": {"type": "so2", "angle_deg": [-180, 180]},
        "encoder": {"type": "rotconv", "channels": [4, 8], "feature_dim": 16, "lift_halvings": 1},
        "decoder": {"type": "mlp", "hidden": [16, 32]},
        "prior": {"type": "gmm", "n_components": 3},
        "model": {"z_cluster_dim": 2, "z_style_dim": 1},
        "loss": {"mode": "unsupervised", "n_augment": 2, "pretrain_epochs": 1},
        "training": {"epochs": 1, "batch_size": 32, "device": "cpu", "seed": 0, "progress": False,
                     "out_dir": str(tmp_path / "run")},
    }
    run = train(config)
    _, model = load_trained_model(run)
    x = build("data", config["data"], split="test").as_tensors()["image"][:8]
    out = model.predict(x)
    assert out["cluster"].shape == (8,) and torch.isfinite(out["tau"]).all()
    assert torch.isfinite(out["canonical"]).all()
