"""Encoder (backbone) and decoder interfaces: ordinary ``nn.Module``s with declared shapes."""

from __future__ import annotations

from torch import nn


class Encoder(nn.Module):
    """Reads ``(N, C, H, W)`` images (``image_shape = (C, H, W)``) and returns
    ``(N, feature_dim)`` features; the model puts its posterior heads on top."""

    image_shape: tuple[int, int, int]
    feature_dim: int


class Decoder(nn.Module):
    """Maps ``(N, latent_dim)`` invariant latents to canonical (pose-free) images
    ``(N, C, H, W)`` with values in ``[0, 1]``; the model then moves them by the pose."""

    image_shape: tuple[int, int, int]
    latent_dim: int
