"""The noise of the features the invariant graph compares, read from their own spectrum:
which PCA axes rise above it, and how much of each is signal."""

from __future__ import annotations

import math

import scipy.integrate
import scipy.optimize
import torch


#: features wider than this are projected by a plain randomized PCA (the full spectrum that
#: the noise floor is read from costs width^3)
NOISE_SPECTRUM_MAX_DIM = 4096


def marchenko_pastur_median(ratio: float) -> float:
    """The median eigenvalue of the covariance of pure unit white noise, ``D`` features over
    ``n`` samples, ``ratio = D / n`` in ``(0, 1]`` (the Marchenko-Pastur law's median)."""
    if ratio <= 0:
        return 1.0
    low, high = (1 - math.sqrt(ratio)) ** 2, (1 + math.sqrt(ratio)) ** 2

    def density(x):
        return math.sqrt(max((high - x) * (x - low), 0.0)) / (2 * math.pi * ratio * x)

    def below(x):
        return scipy.integrate.quad(density, low, x)[0] - 0.5

    return float(scipy.optimize.brentq(below, low, high))


def noise_weighted_axes(pool: torch.Tensor, *, images_seen: int, at_most: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """PCA axes of ``pool`` (rows of features) that rise above its noise, each weighted by
    its share of signal.

    White noise of variance ``s`` spreads its power over every axis, so most of the
    spectrum of images whose signal lives in a few axes is noise: ``s`` is read from the
    median eigenvalue of the covariance (divided by the median of the Marchenko-Pastur law,
    as Gavish and Donoho estimate the noise of a matrix), and an axis counts as signal when its variance
    exceeds the largest eigenvalue pure noise would reach, the Marchenko-Pastur edge
    ``s (1 + sqrt(D / n))^2`` for ``D`` features and ``n`` independent images. Each kept
    axis is weighted by ``1 - s / variance`` (the Wiener factor), so noisy axes count for
    less in the cosine. On clean images the floor is far below the leading axes: they
    keep weights near 1.

    :returns: ``(axes (K, D) weighted, mean (D,), noise floor s)``, ``2 <= K <= at_most``.
    """
    mean = pool.mean(dim=0)
    centred = pool - mean
    covariance = centred.T @ centred / len(pool)
    variance, vectors = torch.linalg.eigh(covariance)
    variance, vectors = variance.flip(0).clamp_min(0), vectors.flip(1)
    ratio = min(pool.shape[1] / max(images_seen, 1), 1.0)
    floor = float(variance.median()) / marchenko_pastur_median(ratio)
    edge = floor * (1 + math.sqrt(ratio)) ** 2
    keep = min(max(int((variance > edge).sum()), 2), at_most)
    weights = (1 - floor / variance[:keep].clamp_min(1e-30)).clamp_min(0)
    return (vectors[:, :keep] * weights).T.float(), mean.float(), floor
