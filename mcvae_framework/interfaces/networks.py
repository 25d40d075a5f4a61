"""Encoder (backbone) and decoder interfaces: ordinary ``nn.Module``s with declared shapes."""

from __future__ import annotations

from torch import nn


class Encoder(nn.Module):
    """Reads ``(N, C, H, W)`` images (``image_shape = (C, H, W)``) and returns
    ``(N, feature_dim)`` features; the model puts its posterior heads on top.

    The output of one image must not depend on the other images of the batch in eval
    mode (batch norm uses running statistics there).
    """

    image_shape: tuple[int, int, int]
    feature_dim: int


class Decoder(nn.Module):
    """Maps ``(N, latent_dim)`` invariant latents to canonical (pose-free) images
    ``(N, C, H, W)`` with values in ``[0, 1]`` (the final sigmoid is inside the decoder);
    the model then moves them by the pose.

    A decoder may also offer ``logits(z)``, the same images before the sigmoid, for
    numerically stable Bernoulli likelihoods; the built-in decoders do.
    """

    image_shape: tuple[int, int, int]
    latent_dim: int
