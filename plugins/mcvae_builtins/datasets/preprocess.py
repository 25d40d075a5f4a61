"""Per-image preprocessing for scientific images (cryo-EM particles, microscopy and
astronomy cut-outs) whose values are not already in ``[0, 1]``: Fourier-crop
downsampling and per-image normalisation, as the ``mrc`` and ``hdf5`` datasets offer them.

The model's decoder ends in a sigmoid, so every image it sees must lie in ``[0, 1]``.
``standardize`` therefore maps the standardised values ``z`` (zero mean, unit variance
inside a centred circle, the normalisation cryo-EM packages apply to particles) linearly
onto ``[0, 1]``: ``(z + clip_sigma) / (2 clip_sigma)``, clamped, so the mean sits at 0.5.
"""

from __future__ import annotations

from typing import Literal, Optional

import numpy as np
import torch
from pydantic import BaseModel, Field, PositiveInt

from mcvae_framework.errors import DataError

Normalize = Literal["standardize", "minmax", "none"]


class PreprocessFields(BaseModel):
    """Config fields of the preprocessing (mixed into a dataset's config class)."""

    normalize: Normalize = Field(
        "standardize", description="per image: standardize (zero mean, unit variance inside a centred circle of "
        "radius mask_radius, then [-clip_sigma, clip_sigma] mapped onto [0, 1]); minmax (lowest value 0, highest 1); "
        "none (the values must already lie in [0, 1], or 0..255 for integers)"
    )
    mask_radius: float = Field(
        1.0, gt=0.0, le=1.5, description="radius of the standardize circle, as a fraction of half the image side "
        "(1: the inscribed circle)"
    )
    clip_sigma: float = Field(3.0, gt=0.0, description="standardize: values this many standard deviations from the "
                              "mean map to 0 and 1")
    invert: bool = Field(False, description="negate the values first (particles darker than the background, as in "
                         "cryo-EM micrographs, become bright)")
    downsample: Optional[PositiveInt] = Field(
        None, description="Fourier-crop every image to downsample x downsample pixels (keeps the low frequencies, "
        "as cryo-EM packages downsample particles)"
    )

    def check_downsample(self, side: int, where: str, items: str = "images") -> None:
        """Refuse a ``downsample`` larger than the ``side`` of the stored ``items``."""
        if self.downsample is not None and self.downsample > side:
            raise DataError(f"{where}: downsample {self.downsample} is larger than the {items} ({side} px); "
                            f"Fourier cropping only shrinks: use at most {side}, or leave it out")


def fourier_crop(images: torch.Tensor, side: int, spatial: int = 2) -> torch.Tensor:
    """``(k, C, H, H)`` images (``(k, C, D, D, D)`` volumes with ``spatial=3``) downsampled to
    ``side`` by keeping the central ``side``-wide block of their centred spectrum (the mean
    of each image is kept)."""
    full = images.shape[-1]
    if side == full:
        return images
    axes = tuple(range(-spatial, 0))
    spectrum = torch.fft.fftshift(torch.fft.fftn(images.to(torch.float64), dim=axes), dim=axes)
    start = full // 2 - side // 2  # the zero frequency sits at full // 2, and at side // 2 after the crop
    block = spectrum[(...,) + (slice(start, start + side),) * spatial]
    out = torch.fft.ifftn(torch.fft.ifftshift(block, dim=axes), dim=axes).real * (side / full) ** spatial
    return out.to(torch.float32)


def circle_mask(side: int, radius: float, spatial: int = 2) -> torch.Tensor:
    """``(side,) * spatial`` bool: pixels (voxels) whose centre lies within ``radius * side / 2``
    of the centre (a disc, or a ball for volumes)."""
    centre = (side - 1) / 2
    axes = torch.meshgrid(*[torch.arange(side) - centre] * spatial, indexing="ij")
    return sum(a ** 2 for a in axes) <= (radius * side / 2) ** 2


class Preprocess:
    """Raw ``(k, H, W)`` or ``(k, C, H, W)`` rows to float32 ``(k, C, S, S)`` in ``[0, 1]``
    (volumes, with ``spatial=3``: ``(k, D, H, W)`` or ``(k, C, D, H, W)`` rows to
    ``(k, C, S, S, S)``; picklable: a streaming dataset's workers run it).

    :param scale: with ``normalize: none``, the value that maps to 1 (255 for integers).
    """

    def __init__(self, normalize: Normalize = "standardize", *, mask_radius: float = 1.0, clip_sigma: float = 3.0,
                 invert: bool = False, downsample: int | None = None, scale: float = 1.0, spatial: int = 2):
        self.normalize, self.mask_radius, self.clip_sigma = normalize, mask_radius, clip_sigma
        self.invert, self.downsample, self.scale, self.spatial = invert, downsample, scale, spatial

    @classmethod
    def from_config(cls, config: PreprocessFields, scale: float = 1.0, spatial: int = 2) -> "Preprocess":
        return cls(config.normalize, mask_radius=config.mask_radius, clip_sigma=config.clip_sigma,
                   invert=config.invert, downsample=config.downsample, scale=scale, spatial=spatial)

    def output_side(self, side: int) -> int:
        return self.downsample or side

    def __call__(self, rows: np.ndarray) -> torch.Tensor:
        images = torch.from_numpy(np.ascontiguousarray(rows)).to(torch.float32)
        spatial = self.spatial
        if images.dim() == spatial + 1:
            images = images[:, None]
        if self.invert and self.normalize != "none":
            images = -images
        if self.downsample:
            images = fourier_crop(images, self.downsample, spatial)
        expand = (...,) + (None,) * spatial  # a per-image value against its pixels
        if self.normalize == "standardize":
            mask = circle_mask(images.shape[-1], self.mask_radius, spatial)
            inside = images[..., mask]
            mean = inside.mean(-1)[expand]
            std = inside.std(-1, unbiased=False)[expand]
            z = (images - mean) / std.clamp_min(1e-12)  # a blank image becomes 0.5 everywhere
            images = (z + self.clip_sigma) / (2 * self.clip_sigma)
        elif self.normalize == "minmax":
            flat = images.flatten(-spatial)
            lo, hi = flat.min(-1).values[expand], flat.max(-1).values[expand]
            images = (images - lo) / (hi - lo).clamp_min(1e-12)
        else:
            images = images / self.scale
            if self.invert:
                images = 1.0 - images
        return images.clamp_(0.0, 1.0).contiguous()
