"""Oriented wavelet features: the filters are proper wavelets, the features turn with the
image, and the invariant graph compares images by them."""

from __future__ import annotations

import pytest
import torch

from mcvae_framework import build
from mcvae_framework.report.evaluation import clustering_metrics
from mcvae_framework.graph.invariant_graph import image_descriptor, invariant_graph_clusters
from mcvae_framework.config.sections import GraphConfig
from mcvae_framework.graph.wavelets import averaging_matrix, morlet, wavelet_features

from test_invariant_graph import moved_shapes


def test_morlet_wavelets_sum_to_zero():
    for theta in (0.0, 0.7, 2.0):
        assert abs(complex(morlet(theta).sum())) < 1e-12  # a flat region gives nothing


def test_the_averaging_matrices_are_a_reflected_gaussian_convolution_subsampled():
    generator = torch.Generator().manual_seed(2)
    image = torch.rand(9, 13, dtype=torch.float64, generator=generator)
    rows, columns = averaging_matrix(9, 1.6, 2), averaging_matrix(13, 1.6, 2)
    assert rows.shape == (5, 9) and columns.shape == (7, 13)
    torch.testing.assert_close(rows.sum(1), torch.ones(5, dtype=torch.float64))
    taps = torch.exp(-0.5 * (torch.arange(-5, 6, dtype=torch.float64) / 1.6) ** 2)
    kernel = torch.outer(taps, taps) / taps.sum() ** 2
    padded = torch.nn.functional.pad(image[None, None], (5, 5, 5, 5), mode="reflect")
    expected = torch.nn.functional.conv2d(padded, kernel[None, None], stride=2)[0, 0]
    torch.testing.assert_close(rows @ image @ columns.T, expected)
    assert torch.allclose(averaging_matrix(1, 1.6, 2), torch.ones(1, 1, dtype=torch.float64))


def test_an_edge_answers_most_in_the_band_across_it():
    image = torch.zeros(1, 1, 21, 21)
    image[..., :, 11:] = 1.0  # a vertical edge: intensity changes along x
    bands = wavelet_features(image, 8).view(9, 11, 11)[1:]
    assert int(bands[:, 5, 5].argmax()) == 0  # orientation 0 oscillates along x
    assert float(bands[4, 5, 5]) < 0.1 * float(bands[0, 5, 5])  # the wave along the edge sees nothing


@pytest.mark.parametrize("orientations", [4, 8, 12])
def test_a_quarter_turn_turns_the_maps_and_shifts_the_orientations(orientations):
    """Odd-sized images keep the subsampling grid symmetric, so the equality is exact."""
    generator = torch.Generator().manual_seed(0)
    image = torch.nn.functional.avg_pool2d(torch.rand(2, 1, 33, 33, generator=generator), 5, 1)  # 29 x 29
    turned = torch.rot90(image, 1, dims=(-2, -1))
    maps = wavelet_features(image, orientations).view(2, 1 + orientations, 15, 15)
    maps_turned = wavelet_features(turned, orientations).view(2, 1 + orientations, 15, 15)
    expected = torch.rot90(maps, 1, dims=(-2, -1))
    shift = orientations // 2
    order = [0] + [1 + (l - shift) % orientations for l in range(orientations)]
    torch.testing.assert_close(maps_turned, expected[:, order], atol=1e-5, rtol=1e-5)


def test_channels_are_described_one_by_one():
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(3, 2, 16, 16, generator=generator)
    both = wavelet_features(image, 8)
    first = wavelet_features(image[:, :1], 8)
    assert both.shape == (3, 2 * 9 * 8 * 8)
    torch.testing.assert_close(both[:, :first.shape[1]], first)


def test_bad_input_is_refused_clearly():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        wavelet_features(torch.rand(16, 16))
    with pytest.raises(ValueError, match="orientations"):
        wavelet_features(torch.rand(1, 1, 16, 16), 0)
    with pytest.raises(ValueError, match="'pixels' or 'wavelets'"):
        image_descriptor("edges")
    with pytest.raises(ValueError, match="features"):
        GraphConfig(features="edges")


def test_the_graph_groups_rotated_shapes_by_their_wavelets():
    group = build("group", {"type": "so2", "angle_deg": [-180, 180]})
    images, labels = moved_shapes(group, per_shape=30, seed=3)
    graph = invariant_graph_clusters(images, group, 3, neighbours=6, kmeans_restarts=5, features="wavelets",
                                     pca_dim=32)
    assert graph.info["features"] == "wavelets" and graph.info["feature_dim"] == 32
    assert clustering_metrics(labels.numpy(), graph.labels.numpy())["accuracy"] == 1.0
    assert bool((labels[graph.neighbours] == labels.unsqueeze(1)).all())
    # without a PCA the standardised features are compared whole: 9 maps of 12 x 12
    whole = invariant_graph_clusters(images, group, 3, neighbours=6, kmeans_restarts=5, features="wavelets",
                                     pca_dim=0)
    assert whole.info["feature_dim"] == 9 * 12 * 12
    assert clustering_metrics(labels.numpy(), whole.labels.numpy())["accuracy"] == 1.0
