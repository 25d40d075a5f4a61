"""Oriented wavelet features: what the invariant graph compares when pixels are not enough.

Two pieces of clothing of one class rarely match pixel for pixel, but their edges run the
same ways in the same places. These features are the first layer of a scattering transform
(Mallat's wavelet modulus, one scale): the image convolved with complex Morlet wavelets at
``orientations`` evenly spaced angles, the modulus taken (so that an edge counts whatever
its exact phase), then averaged by a Gaussian and subsampled by two; beside them the
averaged image itself. A log compresses the dynamic range, so that faint texture counts
beside strong outlines.

The filters are symmetric on the pixel grid: rotating an (odd-sized) image by a quarter
turn rotates every map and moves orientation ``l`` to ``l + orientations / 2`` (mod
orientations: an edge and its half turn give the same modulus), exactly.

kymatio is the field's scattering library, but its release (0.3.0) no longer imports with
current SciPy (``scipy.special.sph_harm`` is gone), and one scale is one convolution and two
small matrix products.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: Width of the finest wavelet, in pixels (the scattering transform's usual 0.8).
SIGMA = 0.8
#: Ratio of the envelope's width along and across the wave (0.5 at 8 orientations).
SLANT_AT_8 = 0.5
#: Multiplier inside the log, ``log(1 + 20 c)``: linear for faint coefficients, logarithmic for
#: strong ones (the value of the probes that chose these features; not tuned).
LOG_GAIN = 20.0


def _grid(half: int) -> tuple[torch.Tensor, torch.Tensor]:
    r = torch.arange(-half, half + 1, dtype=torch.float64)
    return r.view(-1, 1), r.view(1, -1)


def morlet(theta: float, *, sigma: float = SIGMA, slant: float = SLANT_AT_8, half: int | None = None) -> torch.Tensor:
    """A complex Morlet wavelet (``(2 half + 1)^2``, float64) oscillating along ``theta``.

    ``psi(u) = g(u) (exp(i xi u_theta) - beta)``: a Gaussian envelope ``g`` elongated across the
    wave, the wave at frequency ``xi = 3 pi / 4`` per pixel, ``beta`` making it sum to zero
    (so a flat region gives nothing).
    """
    half = half if half is not None else int(math.ceil(3 * sigma / slant))
    y, x = _grid(half)
    along = x * math.cos(theta) + y * math.sin(theta)
    across = -x * math.sin(theta) + y * math.cos(theta)
    envelope = torch.exp(-(along ** 2 + (slant * across) ** 2) / (2 * sigma ** 2))
    wave = torch.exp(1j * (0.75 * math.pi) * along)
    beta = (envelope * wave).sum() / envelope.sum()
    return envelope * (wave - beta) / (2 * math.pi * sigma ** 2 / slant)


def averaging_matrix(size: int, sigma: float, stride: int) -> torch.Tensor:
    """``(ceil(size / stride), size)``: a 1-D Gaussian average of width ``sigma`` taken at every
    ``stride``-th pixel, the signal reflected at its ends. The 2-D average of maps ``m`` is
    then ``A @ m @ A.T`` (the Gaussian is separable): two small matrix products, several
    times faster on a CPU than a convolution of every map."""
    half = int(math.ceil(3 * sigma))
    taps = torch.exp(-0.5 * (torch.arange(-half, half + 1, dtype=torch.float64) / sigma) ** 2)
    taps = taps / taps.sum()
    period = max(2 * (size - 1), 1)
    matrix = torch.zeros(len(range(0, size, stride)), size, dtype=torch.float64)
    for row, centre in enumerate(range(0, size, stride)):
        for offset, weight in zip(range(-half, half + 1), taps):
            source = (centre + offset) % period
            matrix[row, min(source, period - source) if size > 1 else 0] += weight
    return matrix


def _convolve(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` images against ``(F, K, K)`` real kernels, reflected at the border."""
    pad = kernels.shape[-1] // 2
    mode = "reflect" if pad < min(images.shape[-2:]) else "replicate"
    return F.conv2d(F.pad(images, (pad, pad, pad, pad), mode=mode), kernels.unsqueeze(1))


def wavelet_features(images: torch.Tensor, orientations: int = 8) -> torch.Tensor:
    """``(N, C, H, W)`` images -> ``(N, C (1 + orientations) ceil(H/2) ceil(W/2))`` log-moduli.

    Per channel: the image averaged by a Gaussian of width ``2 SIGMA``, then each of the
    ``orientations`` wavelet moduli averaged the same way, all subsampled by two.
    """
    if images.ndim != 4:
        raise ValueError(f"wavelet features: images must be a (N, C, H, W) batch, got shape {tuple(images.shape)} "
                         "(the wavelets are planar: use graph.features: pixels for volumes)")
    if orientations < 1:
        raise ValueError(f"wavelet features: orientations must be at least 1, got {orientations}")
    n, c, h, w = images.shape
    dtype = images.dtype
    slant = SLANT_AT_8 * 8 / max(orientations, 8)  # finer orientations need narrower wavelets
    half = int(math.ceil(3 * SIGMA / slant))
    wavelets = torch.stack([morlet(l * math.pi / orientations, slant=slant, half=half)
                            for l in range(orientations)])
    # real and imaginary parts as 2L real kernels of one convolution
    parts = torch.cat([wavelets.real, wavelets.imag]).to(dtype=dtype, device=images.device)
    rows = averaging_matrix(h, 2 * SIGMA, 2).to(dtype=dtype, device=images.device)
    columns = averaging_matrix(w, 2 * SIGMA, 2).to(dtype=dtype, device=images.device)
    x = images.reshape(n * c, 1, h, w)
    low = rows @ x @ columns.T
    responses = _convolve(x, parts)
    modulus = torch.hypot(responses[:, :orientations], responses[:, orientations:])
    bands = rows @ modulus @ columns.T
    features = torch.cat([low.reshape(n * c, 1, -1), bands.reshape(n * c, orientations, -1)], dim=1)
    return torch.log1p(LOG_GAIN * features.clamp_min(0)).reshape(n, -1)
