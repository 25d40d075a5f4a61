"""Class averages: members moved back by their poses with the group's own act and inverse,
averaged; Fourier ring correlation of two random halves; the .mrcs stack and the figure."""

from __future__ import annotations

import math

import mrcfile
import numpy as np
import pytest
import torch

from mcvae_framework import build
from mcvae_framework.report.class_averages import (
    FRC_THRESHOLD,
    class_averages,
    class_averages_figure,
    fourier_ring_correlation,
    resolution_from_frc,
    write_mrcs,
)


def shape(side: int = 24, kind: int = 0) -> torch.Tensor:
    """An asymmetric shape (an L or a T with a dot), so a wrong pose blurs its average."""
    image = torch.zeros(1, side, side)
    c = side // 2
    if kind == 0:
        image[0, c - 7:c + 6, c - 5:c - 2] = 1.0
        image[0, c + 3:c + 6, c - 5:c + 6] = 1.0
    else:
        image[0, c - 7:c - 4, c - 6:c + 7] = 1.0
        image[0, c - 4:c + 7, c - 1:c + 2] = 1.0
    image[0, c - 6:c - 4, c + 4:c + 6] = 0.7
    return image


def moved_members(group, n: int, kind: int, seed: int, noise: float = 0.3):
    gen = torch.Generator().manual_seed(seed)
    tau = group.sample(n, generator=gen)
    clean = group.act(shape(kind=kind).expand(n, -1, -1, -1).contiguous(), group.exp(tau))
    return clean + noise * torch.randn(clean.shape, generator=gen), tau


def test_frc_of_an_image_with_itself_is_one_and_symmetric():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(32, 32)), rng.normal(size=(32, 32))
    assert np.allclose(fourier_ring_correlation(a, a)[1:], 1.0)
    assert np.allclose(fourier_ring_correlation(a, b), fourier_ring_correlation(b, a))
    assert fourier_ring_correlation(a, b).shape == (17,)
    # independent noise: correlations scatter around 0
    assert abs(np.nanmean(fourier_ring_correlation(a, b)[1:])) < 0.15
    with pytest.raises(ValueError, match="one shape"):
        fourier_ring_correlation(a, b[:16])


def test_resolution_is_the_period_of_the_first_ring_below_the_threshold():
    curve = np.array([1.0, 0.9, 0.8, 0.5, FRC_THRESHOLD - 0.01, 0.3, 0.0, 0.0, 0.0])
    assert resolution_from_frc(curve, side=16) == pytest.approx(16 / 4)
    assert resolution_from_frc(np.ones(9), side=16) == pytest.approx(2.0)  # never below: Nyquist
    assert math.isnan(resolution_from_frc(np.full(9, np.nan), side=16))


@pytest.mark.parametrize("tag, extra", [("so2", {}), ("se2", {"shift": 0.1})])
def test_members_moved_back_by_their_true_poses_average_to_the_shape(tag, extra):
    group = build("group", {"type": tag, "angle_deg": [-90, 90], **extra})
    first, tau_a = moved_members(group, 60, 0, seed=1)
    second, tau_b = moved_members(group, 40, 1, seed=2)
    images, tau = torch.cat([first, second]), torch.cat([tau_a, tau_b])
    clusters = np.array([0] * 60 + [1] * 40)
    probabilities = torch.tensor([[0.9, 0.1]] * 60 + [[0.2, 0.8]] * 40)
    aligned = class_averages(images, clusters, probabilities, group=group, tau=tau, n_clusters=3, seed=0)
    unaligned = class_averages(images, clusters, probabilities, group=group, tau=torch.zeros_like(tau),
                               n_clusters=3, seed=0)
    assert aligned.sizes.tolist() == [60, 40, 0]
    assert aligned.mean_probability[:2] == pytest.approx([0.9, 0.8])
    assert math.isnan(aligned.mean_probability[2]) and not aligned.averages[2].any()
    for k in (0, 1):
        truth = shape(kind=k).numpy()
        error = np.abs(aligned.averages[k] - truth).mean()
        assert error < np.abs(unaligned.averages[k] - truth).mean() / 2
        # the average of many aligned noisy members is sharper than one member: its halves
        # agree to finer rings than two single members do
        assert aligned.resolution[k] < aligned.member_resolution[k]
        assert np.nanmean(aligned.frc[k][1:8]) > np.nanmean(aligned.member_frc[k][1:8])
        assert aligned.resolution[k] < unaligned.resolution[k] or unaligned.resolution[k] == pytest.approx(24)
    rows = aligned.summary()
    assert rows[0]["size"] == 60 and rows[2]["frc_resolution_px"] is None


def test_without_a_group_members_are_averaged_as_they_are():
    images = torch.rand(10, 1, 8, 8)
    result = class_averages(images, np.zeros(10, dtype=int), None, n_clusters=1)
    assert np.allclose(result.averages[0], images.mean(0).numpy(), atol=1e-6)
    assert math.isnan(result.mean_probability[0])


def test_the_halves_are_seeded():
    group = build("group", {"type": "so2"})
    images, tau = moved_members(group, 30, 0, seed=3)
    clusters = np.zeros(30, dtype=int)
    a = class_averages(images, clusters, group=group, tau=tau, n_clusters=1, seed=5)
    b = class_averages(images, clusters, group=group, tau=tau, n_clusters=1, seed=5)
    assert np.array_equal(a.frc, b.frc) and np.array_equal(a.member_frc, b.member_frc)


def test_mrcs_stack_and_figure(tmp_path):
    images = torch.rand(12, 1, 16, 16)
    result = class_averages(images, np.arange(12) % 3, torch.full((12, 3), 1 / 3), n_clusters=3, pixel_size=2.5)
    path = write_mrcs(result.averages, tmp_path / "averages.mrcs", pixel_size=2.5)
    with mrcfile.open(path) as handle:
        assert handle.is_image_stack() and handle.data.shape == (3, 16, 16)
        assert float(handle.voxel_size.x) == pytest.approx(2.5)
        assert np.allclose(handle.data, result.averages[:, 0])
    assert result.summary()[0]["frc_resolution_angstrom"] == pytest.approx(result.resolution[0] * 2.5)
    figure = class_averages_figure(result, tmp_path / "averages.png")
    assert figure.read_bytes()[:4] == b"\x89PNG"
