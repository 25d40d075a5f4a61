"""The training-free invariant graph: groups rotated/shifted copies of distinct shapes
perfectly, stays in bounded memory, and the group hooks it relies on behave."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mcvae_framework import build
from mcvae_framework.report.evaluation import clustering_metrics
from mcvae_framework.graph.neighbours import exact_neighbours
from mcvae_framework.graph.invariant_graph import (
    GraphClusters,
    balanced_kmeans,
    central_members,
    gaussian_blur,
    invariant_graph_clusters,
)
from mcvae_framework.graph.noise import noise_weighted_axes
from mcvae_framework.interfaces import LieGroup


def shape_images(size: int = 24) -> torch.Tensor:
    """Three clearly different filled shapes, upright: a bar, a triangle, a ring."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    bar = ((xs.abs() < 0.15) & (ys.abs() < 0.6)).float()
    triangle = ((ys < 0.45) & (ys > -0.45 + 2 * xs.abs() * 0.9)).float()
    radius = (xs ** 2 + ys ** 2).sqrt()
    ring = ((radius < 0.55) & (radius > 0.3)).float()
    return torch.stack([bar, triangle, ring]).unsqueeze(1)


def moved_shapes(group, per_shape: int, seed: int = 0):
    shapes = shape_images(32 if group.has_translation else 24)
    labels = torch.arange(len(shapes)).repeat_interleave(per_shape)
    images = shapes[labels]
    tau = group.sample(len(images), torch.Generator().manual_seed(seed))
    return group.act(images, group.exp(tau)), labels


@pytest.mark.parametrize(
    "group_config",
    [
        {"type": "so2", "angle_deg": [-180, 180]},
        {"type": "se2", "angle_deg": [-180, 180], "shift": 0.1},
        {"type": "sim2", "angle_deg": [-180, 180], "shift": 0.1, "log_scale": [-0.2, 0.2]},
    ],
    ids=lambda c: c["type"],
)
def test_moved_copies_of_distinct_shapes_are_grouped_perfectly(group_config):
    group = build("group", group_config)
    images, labels = moved_shapes(group, per_shape=40)
    graph = invariant_graph_clusters(images, group, 3, neighbours=6, kmeans_restarts=5)
    metrics = clustering_metrics(labels.numpy(), graph.labels.numpy())
    assert metrics["accuracy"] == 1.0
    assert graph.neighbours.shape == (120, 6) and graph.similarities.shape == (120, 6)
    assert graph.confident.sum() == 3 * 28  # 0.7 of each cluster of 40
    # every neighbour of an image is the same shape
    assert bool((labels[graph.neighbours] == labels.unsqueeze(1)).all())


def test_without_the_search_rotated_shapes_are_not_recognised():
    """The invariance comes from the search: with the identity alone, similarity falls
    well below that of the best relative rotation."""
    group = build("group", {"type": "so2", "angle_deg": [-180, 180]})
    bar = shape_images()[:1]
    turned = group.act(bar, group.exp(torch.tensor([[math.radians(40)]])))
    from mcvae_framework.graph.invariant_graph import moved_features

    reference, moved = moved_features(torch.cat([bar, turned]), group, group.search_poses(13), blur_sigma=1.0)
    searched = float((reference[0] @ moved[:, 1].T).max())
    identity_only = float(reference[0] @ reference[1])
    assert searched > 0.99 and identity_only < 0.7


def test_chunked_neighbours_equal_the_full_computation():
    generator = torch.Generator().manual_seed(1)
    reference = torch.nn.functional.normalize(torch.randn(50, 8, generator=generator), dim=1)
    moved = torch.nn.functional.normalize(torch.randn(3, 50, 8, generator=generator), dim=2)
    full = torch.stack([reference @ m.T for m in moved]).amax(0)
    full.fill_diagonal_(-float("inf"))
    expected = full.topk(4, dim=1)
    index, values = exact_neighbours(reference, moved, 4, chunk_size=7)
    assert torch.equal(index, expected.indices)
    assert torch.allclose(values, expected.values)


def test_pca_reduction_keeps_the_grouping():
    group = build("group", {"type": "so2", "angle_deg": [-180, 180]})
    images, labels = moved_shapes(group, per_shape=30, seed=2)
    graph = invariant_graph_clusters(images, group, 3, neighbours=6, pca_dim=16, kmeans_restarts=5)
    assert graph.info["feature_dim"] == 16
    assert clustering_metrics(labels.numpy(), graph.labels.numpy())["accuracy"] == 1.0


def test_the_noise_weighted_projection_keeps_the_signal_axes_and_shrinks_noisy_ones():
    """Signal in 4 axes of 256 features plus white noise: the noise floor is read from the
    spectrum, about the 4 signal axes rise above it, weighted by their share of signal; on
    the clean signal every kept axis keeps a weight near 1."""
    rng = np.random.default_rng(0)
    n, width, rank, noise = 3000, 256, 4, 0.5
    basis = np.linalg.qr(rng.standard_normal((width, rank)))[0]
    strength = np.array([3.0, 2.0, 1.5, 1.2])  # per-axis signal spread, above the noise's 0.5
    signal = (rng.standard_normal((n, rank)) * strength) @ basis.T
    noisy = torch.as_tensor(signal + noise * rng.standard_normal((n, width)))
    axes, mean, floor = noise_weighted_axes(noisy, images_seen=n, at_most=128)
    assert floor == pytest.approx(noise ** 2, rel=0.15)
    assert axes.shape == (rank, width)
    weights = axes.double().norm(dim=1).numpy()
    expected = 1 - noise ** 2 / (strength ** 2 + noise ** 2)
    assert weights == pytest.approx(expected, abs=0.05)
    assert np.all(np.diff(weights) < 0)  # the weaker the axis, the more it is shrunk
    # the kept axes span the signal's
    overlap = np.linalg.svd(basis.T @ (axes.double().numpy().T / weights))[1]
    assert overlap.min() > 0.95
    clean_axes, _, clean_floor = noise_weighted_axes(torch.as_tensor(signal), images_seen=n, at_most=128)
    assert clean_floor < 1e-12 and clean_axes.double().norm(dim=1).min() > 0.999


def test_a_noisy_graph_compares_images_on_the_axes_above_the_noise():
    """``pca_dim: auto`` reports the axes it kept and the noise floor it read; a pinned
    pca_dim keeps plain PCA (no floor)."""
    group = build("group", {"type": "so2", "angle_deg": [-180, 180]})
    images, labels = moved_shapes(group, per_shape=30, seed=2)
    images = images + 0.3 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    graph = invariant_graph_clusters(images, group, 3, neighbours=6, kmeans_restarts=5)
    assert graph.info["noise_floor"] > 0 and 2 <= graph.info["pca_dim"] <= 128
    assert clustering_metrics(labels.numpy(), graph.labels.numpy())["accuracy"] == 1.0
    pinned = invariant_graph_clusters(images, group, 3, neighbours=6, pca_dim=16, kmeans_restarts=5)
    assert pinned.info["noise_floor"] is None and pinned.info["pca_dim"] == 16


def blobs(sizes, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated Gaussian blobs on the unit circle, ``sizes[i]`` points in blob ``i``."""
    rng = np.random.default_rng(seed)
    angles = 2 * np.pi * np.arange(len(sizes)) / len(sizes)
    centres = np.stack([np.cos(angles), np.sin(angles)], 1)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return centres[labels] + 0.05 * rng.standard_normal((len(labels), 2)), labels


def test_balanced_kmeans_leaves_a_bad_local_optimum_that_plain_kmeans_keeps():
    from sklearn.cluster import KMeans

    points, labels = blobs([60, 60, 60])
    # two centres inside blob 0 and one between blobs 1 and 2: Lloyd's k-means stays there
    start = np.stack([points[0] + [0.02, 0], points[1] - [0.02, 0], points[60:].mean(0)])
    plain = KMeans(3, init=start, n_init=1).fit(points).labels_
    assert clustering_metrics(labels, plain)["accuracy"] < 0.7
    balanced, centres = balanced_kmeans(points, start)
    assert clustering_metrics(labels, balanced)["accuracy"] == 1.0
    assert np.bincount(balanced).tolist() == [60, 60, 60]
    assert centres.shape == (3, 2)


def test_the_balanced_graph_gives_equal_clusters():
    group = build("group", {"type": "so2", "angle_deg": [-180, 180]})
    images, labels = moved_shapes(group, per_shape=40)
    graph = invariant_graph_clusters(images, group, 3, neighbours=6, kmeans_restarts=5, balanced=True)
    assert clustering_metrics(labels.numpy(), graph.labels.numpy())["accuracy"] == 1.0
    assert graph.info["cluster_sizes"] == [40, 40, 40]


def test_the_graph_function_takes_its_settings_and_defaults_from_the_graph_section():
    from mcvae_framework.config.sections import GraphConfig

    images, labels = moved_shapes(build("group", {"type": "so2", "angle_deg": [-180, 180]}), per_shape=30)
    group = build("group", {"type": "so2", "angle_deg": [-180, 180]})
    by_section = invariant_graph_clusters(images, group, 3, GraphConfig(neighbours=6, blur_sigma=0.5))
    by_keywords = invariant_graph_clusters(images, group, 3, neighbours=6, blur_sigma=0.5)
    assert torch.equal(by_section.labels, by_keywords.labels)
    assert by_section.info["neighbours"] == 6 and by_section.info["blur_sigma"] == 0.5
    with pytest.raises(Exception, match="neighbours"):
        invariant_graph_clusters(images, group, 3, neighbours=1)  # validated like the config section


def test_central_members_keeps_the_nearest_fraction_of_every_cluster():
    labels = np.array([0, 0, 0, 0, 1, 1])
    distance = np.array([0.4, 0.1, 0.3, 0.2, 0.9, 0.5])
    keep = central_members(labels, distance, 0.5)
    assert keep.tolist() == [False, True, False, True, False, True]


def test_blur_preserves_mass_and_constant_images():
    flat = torch.full((2, 1, 9, 9), 0.25)
    assert torch.allclose(gaussian_blur(flat, 1.0), flat)
    dot = torch.zeros(1, 1, 15, 15)
    dot[0, 0, 7, 7] = 1.0
    blurred = gaussian_blur(dot, 1.0)
    assert math.isclose(float(blurred.sum()), 1.0, rel_tol=1e-5) and float(blurred.max()) < 0.2


def test_volumes_are_blurred_along_every_axis_as_a_separable_convolution():
    volumes = torch.rand(2, 1, 7, 8, 9, generator=torch.Generator().manual_seed(0))
    sigma = 1.0
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1.0) / sigma) ** 2)
    taps = taps / taps.sum()
    expected = volumes
    for axis in (2, 3, 4):  # one 1-D convolution per axis, borders replicated
        shape = [1, 1, 1, 1, 1]
        shape[axis] = len(taps)
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (4 - axis)] = pad[2 * (4 - axis) + 1] = radius
        expected = torch.nn.functional.conv3d(torch.nn.functional.pad(expected, pad, mode="replicate"),
                                              taps.view(shape[2:]).view(1, 1, *shape[2:]))
    assert torch.allclose(gaussian_blur(volumes, sigma), expected, atol=1e-6)


def test_too_few_images_are_refused_clearly():
    group = build("group", {"type": "so2"})
    with pytest.raises(ValueError, match="too few"):
        invariant_graph_clusters(torch.rand(5, 1, 8, 8), group, 3, neighbours=10)


# ------------------------------------------------------------------ the group hooks


def test_builtin_search_poses_cover_the_configured_rotation_range():
    narrow = build("group", {"type": "so2", "angle_deg": [-30, 30]})
    half = build("group", {"type": "so2", "angle_deg": [-90, 90]})
    full = build("group", {"type": "se2", "angle_deg": [-180, 180]})
    assert torch.allclose(narrow.search_poses(7)[:, 0].abs().max(), torch.tensor(math.radians(30)))
    # a partial range: +-60 degrees at most (the graph chains the rest; a 6 never matches a 9)
    assert torch.allclose(half.search_poses(13)[:, 0].abs().max(), torch.tensor(math.radians(60)))
    # the full circle: every relative rotation, in equal steps, the identity included, no duplicate end
    poses = full.search_poses(12)
    assert poses.shape == (12, 3) and torch.all(poses[:, 1:] == 0)
    assert torch.allclose(torch.diff(poses[:, 0]), torch.tensor(math.radians(30)))
    assert bool((poses[:, 0] == 0).any()) and poses[:, 0].min() >= -math.pi - 1e-6 and poses[:, 0].max() < math.pi
    # 0: the group's own grid, a rotation every 10 degrees
    assert len(half.search_poses(0)) == 13 and len(full.search_poses(0)) == 36


def test_prealign_removes_shifts_and_scales():
    group = build("group", {"type": "sim2", "angle_deg": [0, 0], "shift": 0.15, "log_scale": [-0.2, 0.2]})
    shape = shape_images(32)[1:2].repeat(6, 1, 1, 1)
    tau = group.sample(6, torch.Generator().manual_seed(4))
    moved = group.act(shape, group.exp(tau))
    aligned = group.prealign(moved)
    spread_before = (moved - moved.mean(0)).abs().mean()
    spread_after = (aligned - aligned.mean(0)).abs().mean()
    assert spread_after < 0.35 * spread_before


class OneParameterShift(LieGroup):
    """A third-party group with no override of the graph hooks: horizontal shifts."""

    dim = 1
    coordinate_names = ("u",)

    def exp(self, tau):
        g = torch.eye(3, dtype=tau.dtype).repeat(len(tau), 1, 1)
        g[:, 0, 2] = tau[:, 0]
        return g

    def log(self, g):
        return g[:, 0, 2:3]

    def inverse(self, g):
        return torch.linalg.inv(g)

    def identity(self, n, *, dtype=None, device=None):
        return torch.eye(3, dtype=dtype, device=device).repeat(n, 1, 1)

    def act(self, images, g):
        theta = torch.linalg.inv(g)[:, :2, :].to(images.dtype)
        grid = torch.nn.functional.affine_grid(theta, images.shape, align_corners=False)
        return torch.nn.functional.grid_sample(images, grid, align_corners=False)

    def sample(self, n, generator=None, *, dtype=None, device=None):
        return (torch.rand(n, 1, generator=generator, dtype=dtype or torch.float32) - 0.5) * 0.4

    def log_prior(self, tau):
        return torch.zeros(len(tau))

    def distance(self, g1, g2):
        return {"shift": (g1[:, 0, 2] - g2[:, 0, 2]).abs()}


def test_a_third_party_group_gets_a_default_search_from_its_pose_distribution():
    group = OneParameterShift()
    poses = group.search_poses(9)
    assert poses.shape == (9, 1) and float(poses[0, 0]) == 0.0
    assert float(poses.abs().max()) <= 0.2
    images = torch.zeros(3, 1, 16, 16)
    assert torch.equal(group.prealign(images), images)


def test_synchronised_angles_recover_the_rotations_up_to_one_offset_per_cluster():
    group = build("group", {"type": "so2", "angle_deg": [-90, 90]})
    shapes = shape_images(24)[:2]  # bar (half-turn symmetric: angles are known mod 180) and triangle
    labels = torch.arange(2).repeat_interleave(60)
    tau = group.sample(120, torch.Generator().manual_seed(5))
    images = group.act(shapes[labels], group.exp(tau))
    graph = invariant_graph_clusters(images, group, 2, neighbours=8, kmeans_restarts=5)
    assert graph.angles is not None and graph.angles.shape == (120,)
    triangle = labels == 1
    cluster = graph.labels[triangle]
    assert bool((cluster == cluster[0]).all())
    difference = torch.angle(torch.exp(1j * (graph.angles[triangle] - tau[triangle, 0]).double()))
    offset = torch.angle(torch.exp(1j * difference).mean())
    residual = torch.angle(torch.exp(1j * (difference - offset))).abs()
    assert math.degrees(float(residual.median())) < 3.0


def test_poses_of_a_shape_that_looks_the_same_after_half_a_turn_are_not_trusted():
    # over the full circle a bar's relative angles are right only up to half a turn: its
    # synchronised angles are noise, and the pose guidance should not teach them
    group = build("group", {"type": "so2", "angle_deg": [-180, 180]})
    shapes = shape_images(24)[:2]  # bar and triangle
    labels = torch.arange(2).repeat_interleave(60)
    tau = group.sample(120, torch.Generator().manual_seed(5))
    graph = invariant_graph_clusters(group.act(shapes[labels], group.exp(tau)), group, 2, neighbours=8,
                                     kmeans_restarts=5)
    assert graph.pose_trust.shape == (120,) and bool(((graph.pose_trust >= 0) & (graph.pose_trust <= 1)).all())
    bar, triangle = graph.pose_trust[labels == 0], graph.pose_trust[labels == 1]
    assert float(triangle.median()) > 0.95 > 0.7 > float(bar.mean())
    assert graph.info["pose_trust"] == [round(float(graph.pose_trust[graph.labels == c].mean()), 3) for c in (0, 1)]
    assert GraphClusters.from_state_dict(graph.state_dict()).pose_trust.equal(graph.pose_trust)


def test_pose_trust_reads_the_residual_turn_of_every_neighbour_pair():
    from mcvae_framework.graph.synchronisation import pose_trust, rotation_cosine

    angle = torch.tensor(0.7)
    turn = torch.tensor([[angle.cos(), -angle.sin()], [angle.sin(), angle.cos()]])
    assert torch.isclose(rotation_cosine(turn), angle.cos())
    assert rotation_cosine(torch.diag(torch.tensor([1.0, -1.0]))).abs() < 1e-6  # the wrong mirror image: 0
    spin = torch.eye(3)
    spin[:2, :2] = turn
    assert torch.isclose(rotation_cosine(spin), angle.cos())  # a turn of space about one axis
    neighbours = torch.tensor([[1, 2], [0, 2], [0, 3], [2, 1]])
    labels = np.array([0, 0, 0, 1])
    agreement = torch.tensor([[1.0, 0.5], [1.0, -1.0], [0.2, 1.0], [1.0, 1.0]])
    # image 1's mean is below 0; image 2 counts its neighbour in its cluster only; image 3 has none
    assert torch.allclose(pose_trust(neighbours, labels, agreement), torch.tensor([0.75, 0.0, 0.2, 0.0]))
