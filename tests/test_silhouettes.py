"""Filled silhouettes: outlines become their filled shapes, the graph offers them only where a
threshold means something, and keeps them where they cluster outlines of different sizes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from mcvae_framework import build
from mcvae_framework.graph.chunks import ImageChunks
from mcvae_framework.graph.invariant_graph import invariant_graph_clusters
from mcvae_framework.graph.silhouettes import (
    MIN_CONTRAST,
    NOISE_FREE,
    closing_radius,
    silhouette_contrast,
    silhouette_images,
    silhouettes,
)
from mcvae_framework.report.evaluation import clustering_metrics

ELLIPSE = [(0.55 * math.cos(t), math.sin(t)) for t in np.linspace(0, 2 * math.pi, 40, endpoint=False)]
KITE = [(0.0, -1.0), (0.55, -0.2), (0.0, 1.0), (-0.55, -0.2)]


def outline(points, side: int = 40, *, radius: float = 12.0, angle: float = 0.0, width: int = 2, fill=False):
    """One polygon drawn at ``radius`` pixels, turned by ``angle``, as a 2-px outline (or filled)."""
    cos, sin = math.cos(angle), math.sin(angle)
    poly = [(side / 2 + radius * (cos * x - sin * y), side / 2 + radius * (sin * x + cos * y)) for x, y in points]
    image = Image.new("L", (side, side), 0)
    if fill:
        ImageDraw.Draw(image).polygon(poly, fill=255)
    else:
        ImageDraw.Draw(image).polygon(poly, outline=255, width=width)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)


def outlines_of_two_sizes(per_shape: int = 24, seed: int = 0, noise: float = 0.1):
    """Ellipse and kite outlines (the kite as wide and as long as the ellipse), sizes 9.6 to
    14.4 px, turned over the full circle, under Gaussian noise: pixel outlines of one shape at
    two sizes barely overlap."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, points in enumerate((ELLIPSE, KITE)):
        for _ in range(per_shape):
            image = outline(points, radius=12.0 * rng.uniform(0.8, 1.2), angle=rng.uniform(-math.pi, math.pi))
            images.append((image + noise * torch.from_numpy(rng.standard_normal(image.shape)).float()).clamp(0, 1))
            labels.append(label)
    return torch.stack(images)[:, None], np.array(labels)


def test_an_outline_becomes_its_filled_shape():
    filled = outline(ELLIPSE, fill=True)
    mask = silhouettes(outline(ELLIPSE)[None, None])[0, 0]
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    overlap = (mask * filled).sum() / ((mask + filled) > 0).sum()
    assert overlap > 0.85  # the inside is filled, the 2-px line itself is kept
    assert mask[0].sum() == 0 and mask[:, 0].sum() == 0  # nothing glued to the border


def test_an_outline_broken_at_a_corner_is_still_filled():
    image = outline(KITE, radius=14.0)
    rows, cols = torch.nonzero(image > 0.5, as_tuple=True)
    top = rows.min().item()  # cut a gap of 2 rows out of the kite's top corner
    image[top:top + 2] = 0
    assert closing_radius(40) >= 2
    mask = silhouettes(image[None, None])[0, 0]
    assert mask.sum() > 0.8 * outline(KITE, radius=14.0, fill=True).sum()


def test_dark_objects_on_a_bright_background_are_the_foreground():
    bright = outline(ELLIPSE)
    assert torch.equal(silhouettes((1 - bright)[None, None]), silhouettes(bright[None, None]))


def test_a_blank_image_has_an_empty_silhouette_and_other_shapes_are_refused():
    assert silhouettes(torch.zeros(2, 1, 16, 16)).sum() == 0
    with pytest.raises(ValueError, match="single-channel"):
        silhouettes(torch.zeros(2, 3, 16, 16))


def test_the_contrast_reads_the_noise_of_the_images():
    clean, _ = outlines_of_two_sizes(per_shape=4, noise=0.0)
    noisy, _ = outlines_of_two_sizes(per_shape=4, noise=0.1)
    pure_noise = torch.randn(8, 1, 40, 40, generator=torch.Generator().manual_seed(0))
    assert silhouette_contrast(clean) == NOISE_FREE
    assert silhouette_contrast(noisy) > MIN_CONTRAST
    assert silhouette_contrast(pure_noise) < 5
    assert silhouette_contrast(torch.rand(4, 3, 16, 16)) == 0.0  # colour images: no silhouettes


def test_silhouette_images_are_read_as_their_source_is_indexed():
    images, _ = outlines_of_two_sizes(per_shape=3)
    assert torch.equal(silhouette_images(images), silhouettes(images))  # a tensor's, computed once
    # over chunks read on demand (a memory-mapped or streamed set), the same masks, chunk by chunk
    chunks = ImageChunks(lambda positions: images[torch.as_tensor(positions)], len(images), images.shape[1:])
    lazy = silhouette_images(chunks)
    assert lazy.shape == images.shape and len(lazy) == 6 and lazy.ndim == 4
    assert torch.equal(lazy[1:4], silhouettes(images[1:4]))
    assert torch.equal(lazy[-1], silhouettes(images[5:6])[0])
    assert torch.equal(lazy[torch.tensor([0, 5])], silhouettes(images[[0, 5]]))
    assert torch.equal(lazy[0:6], silhouettes(images))


def test_the_graph_keeps_silhouettes_where_they_cluster_outlines_of_different_sizes():
    images, labels = outlines_of_two_sizes()
    group = build("group", {"type": "se2", "angle_deg": [-180, 180], "shift": 0.1})
    graph = invariant_graph_clusters(images, group, 2, neighbours=5, kmeans_restarts=5)
    names = [c["features"] for c in graph.info["candidates"]]
    assert names == ["pixels", "pixels", "silhouettes"]
    assert graph.info["features"] == "silhouettes" and graph.info["silhouette_contrast"] > MIN_CONTRAST
    assert clustering_metrics(labels, graph.labels.numpy())["accuracy"] == 1.0
    pixels = invariant_graph_clusters(images, group, 2, neighbours=5, kmeans_restarts=5, silhouettes=False)
    assert [c["features"] for c in pixels.info["candidates"]] == ["pixels", "pixels"]
    assert "silhouette_contrast" not in pixels.info


def test_noisy_images_and_named_wavelets_get_no_silhouettes():
    group = build("group", {"type": "so2", "angle_deg": [-180, 180]})
    noisy = torch.randn(40, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    graph = invariant_graph_clusters(noisy, group, 2, neighbours=5, kmeans_restarts=2)
    assert [c["features"] for c in graph.info["candidates"]] == ["pixels", "pixels"]
    assert graph.info["silhouette_contrast"] < MIN_CONTRAST  # measured, then left out
    clean, _ = outlines_of_two_sizes(per_shape=10, noise=0.0)
    wavelets = invariant_graph_clusters(clean, group, 2, neighbours=5, kmeans_restarts=2, features="wavelets")
    assert [c["features"] for c in wavelets.info["candidates"]] == ["wavelets"]
    forced = invariant_graph_clusters(noisy, group, 2, neighbours=5, kmeans_restarts=2, silhouettes=True)
    assert forced.info["candidates"][-1]["features"] == "silhouettes"


def test_silhouettes_true_on_colour_images_is_refused_with_the_fix():
    group = build("group", {"type": "so2", "angle_deg": [-180, 180]})
    colour = torch.rand(20, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="graph.silhouettes: true needs single-channel 2-D images.*auto or false"):
        invariant_graph_clusters(colour, group, 2, neighbours=5, silhouettes=True)
    graph = invariant_graph_clusters(colour, group, 2, neighbours=5, kmeans_restarts=2)  # auto: left out
    assert [c["features"] for c in graph.info["candidates"]] == ["pixels", "pixels"]


def test_volumes_get_no_silhouettes_and_silhouettes_true_on_them_is_refused():
    group = build("group", {"type": "so3"})
    volumes = torch.rand(20, 1, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="graph.silhouettes: true needs single-channel 2-D images.*auto or false"):
        invariant_graph_clusters(volumes, group, 2, neighbours=5, search_size=4, silhouettes=True)
    graph = invariant_graph_clusters(volumes, group, 2, neighbours=5, search_size=4, kmeans_restarts=2)
    assert [c["features"] for c in graph.info["candidates"]] == ["pixels", "pixels"]  # blurs 0 and 1
