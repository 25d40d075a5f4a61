"""Filled silhouettes: what the graph compares when an object's outline is all an image shows.

Two thin outlines of the same shape at sizes 20% apart share hardly a pixel, so a pixel
comparison finds a small ellipse closer to a small kite than to a large ellipse (a folder of
2-pixel shape outlines clustered 0.92 that way). Their filled silhouettes overlap over most
of their area whatever the size, and the shapes come apart (1.000 on the same folder).

A silhouette is the image's foreground, holes filled: the pixels (lightly smoothed) that
stand out from the background level (the image's median) by more than 40% of its brightest
(or darkest) contrast, gaps up to 1/16 of the image side closed first, so that an outline
broken at a corner still encloses its inside. The graph clusters them as one more candidate,
kept only when its clusters cut its own graph more cleanly (modularity) than the pixels'
do; it is offered only where a threshold means something: single-channel images whose
foreground stands far above their noise (:func:`silhouette_contrast`), never noisy
particles, where a threshold would trace noise.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from .chunks import transformed

#: the foreground is what stands out by more than this fraction of the image's contrast
THRESHOLD = 0.4
#: smoothing (pixels) before the threshold: one stray noise pixel never joins the foreground
SMOOTHING = 0.7
#: with this contrast the threshold sits 6 noise deviations from the background (0.4 x 15):
#: noise alone lights about one pixel in a billion (none in 10,000 images of 48x48), and
#: silhouettes are offered (64-px particles at SNR 1, 32 px as compared: about 10)
MIN_CONTRAST = 15.0

#: the contrast reported for a background without noise (a finite number: it goes into report.json)
NOISE_FREE = 1e6


def _contrast(image: np.ndarray) -> tuple[float, float, float]:
    """``(background, signed contrast, noise deviation)`` of one smoothed image: the contrast
    towards the brighter tail when objects are bright, towards the darker one when dark."""
    background = float(np.median(image))
    bright, dark = np.percentile(image, 99.5) - background, background - np.percentile(image, 0.5)
    noise = 1.4826 * float(np.median(np.abs(image - background)))
    return background, float(bright if bright >= dark else -dark), noise


def closing_radius(side: int) -> int:
    """Gaps up to 1/16 of the image side are closed (3 pixels at 48, 2 at 28, 1 at 16)."""
    return max(1, int(round(side / 16)))


def silhouettes(images: torch.Tensor) -> torch.Tensor:
    """``(N, 1, H, W)`` images -> their filled silhouettes, ``(N, 1, H, W)`` masks of 0 and 1."""
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"silhouettes: need (N, 1, H, W) single-channel images, got shape {tuple(images.shape)}")
    radius = closing_radius(min(images.shape[-2:]))
    out = np.zeros(tuple(images.shape), dtype=np.float32)
    for i, image in enumerate(images[:, 0].detach().cpu().numpy()):
        smooth = ndimage.gaussian_filter(image.astype(np.float64), SMOOTHING)
        background, contrast, _ = _contrast(smooth)
        if contrast == 0:
            continue  # a blank image has no foreground
        mask = (smooth - background) / contrast > THRESHOLD
        # padded, so that closing never glues the foreground to the image border
        padded = ndimage.binary_closing(np.pad(mask, radius + 1), iterations=radius)
        out[i, 0] = ndimage.binary_fill_holes(padded)[radius + 1:-radius - 1, radius + 1:-radius - 1]
    return torch.from_numpy(out)


def silhouette_contrast(images, *, sample: int = 200, seed: int = 0) -> float:
    """The median, over a seeded sample of the images, of their foreground contrast in noise
    deviations (smoothed as :func:`silhouettes` does; :data:`NOISE_FREE` on a noise-free background)."""
    if images.ndim != 4 or images.shape[1] != 1:
        return 0.0
    rng = np.random.default_rng(seed)
    positions = np.sort(rng.choice(len(images), min(sample, len(images)), replace=False))
    ratios = []
    for image in images[torch.as_tensor(positions)][:, 0].numpy():
        _, contrast, noise = _contrast(ndimage.gaussian_filter(image.astype(np.float64), SMOOTHING))
        ratios.append(min(NOISE_FREE, abs(contrast) / noise) if noise > 0 else (NOISE_FREE if contrast else 0.0))
    return float(np.median(ratios))


def silhouette_images(images):
    """The silhouettes of an image source (:func:`~mcvae_framework.graph.chunks.transformed`): a
    tensor's computed once, an :class:`~mcvae_framework.graph.chunks.ImageChunks`' as its chunks
    are read (never held whole)."""
    return transformed(images, silhouettes)


__all__ = ["MIN_CONTRAST", "closing_radius", "silhouette_contrast", "silhouette_images", "silhouettes"]
