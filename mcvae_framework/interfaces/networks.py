"""Encoder (backbone) and decoder interfaces: ordinary ``nn.Module``s with declared shapes."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class PoseReadout(NamedTuple):
    """What an encoder with a pose readout returns from ``forward_with_pose(x)``.

    * ``features``: ``(N, feature_dim)``, the same as ``forward(x)``: they feed the
      invariant heads ``z_c`` and ``z_v`` (and the pose head).
    * ``pose_features``: ``(N, pose_feature_dim)`` extra features only the pose head
      reads (e.g. where the content sits, for a group with translations).
    * ``orientation``: ``(N,)`` an angle in radians in ``(-pi, pi]`` that turns with the
      image, in the groups' convention: moving ``x`` by a rotation of ``alpha`` adds
      ``alpha`` to it. The pose head adds it to its first angle coordinate. ``None``
      when the encoder reads no orientation.
    """

    features: torch.Tensor
    pose_features: torch.Tensor
    orientation: torch.Tensor | None


class Encoder(nn.Module):
    """Reads ``(N, C, H, W)`` images (``image_shape = (C, H, W)``) and returns
    ``(N, feature_dim)`` features; the model puts its posterior heads on top.

    The output of one image must not depend on the other images of the batch in eval
    mode (batch norm uses running statistics there).

    **Optional pose readout.** An encoder that knows the rotation of its input (e.g. one
    equivariant to rotations) may also define ``forward_with_pose(x)``, returning a
    :class:`PoseReadout`, and declare ``pose_feature_dim``. For a model with a group the
    core then encodes through it: the invariant heads read ``features``, the pose head
    reads ``features ++ pose_features`` and predicts the first angle of ``tau`` as
    ``orientation`` plus its own learned offset (which starts at 0). Without it, every
    head reads ``forward(x)``.
    """

    image_shape: tuple[int, int, int]
    feature_dim: int


class Decoder(nn.Module):
    """Maps ``(N, latent_dim)`` invariant latents to canonical (pose-free) images
    ``(N, C, H, W)`` with values in ``[0, 1]`` (the final sigmoid is inside the decoder);
    the model then moves them by the pose.
    """

    image_shape: tuple[int, int, int]
    latent_dim: int
