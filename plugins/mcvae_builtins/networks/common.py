"""Pieces every built-in network shares: activations and shape checks."""

from __future__ import annotations

from typing import Literal

from torch import nn

from mcvae_framework.errors import ConfigError

#: activation names a network config accepts.
Activation = Literal["relu", "leaky_relu", "elu", "gelu", "silu", "tanh"]

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module for ``name`` (one of :data:`Activation`)."""
    return _ACTIVATIONS[name]()


def check_image_shape(image_shape, kind: str, tag: str, volumes: bool = False) -> tuple[int, ...]:
    """``image_shape`` as a ``(C, H, W)`` tuple of positive ints with ``H == W`` (or, where the
    network takes ``volumes``, a ``(C, D, H, W)`` cube).

    :raises ConfigError: naming the component and the shape it was given.
    """
    try:
        shape = tuple(int(s) for s in image_shape)
    except (TypeError, ValueError):
        shape = ()
    ranks = (3, 4) if volumes else (3,)
    if len(shape) not in ranks or min(shape) < 1 or len(set(shape[1:])) != 1:
        wanted = "square images (C, H, H) or cubic volumes (C, D, D, D)" if volumes else "square images (C, H, H)"
        hint = "" if volumes or len(shape) != 4 else "; it reads 2-D images only: use the conv or mlp " + kind + \
            " for volumes"
        raise ConfigError(
            [(f"{kind}.type", f"the {tag!r} {kind} needs {wanted}, got image_shape={image_shape!r}{hint}")]
        )
    return shape


def spatial_layers(image_shape) -> dict[str, type]:
    """The convolution, transposed convolution and batch norm classes for the data's shape:
    2-D for ``(C, H, W)`` images, 3-D for ``(C, D, H, W)`` volumes."""
    if len(image_shape) == 4:
        return {"conv": nn.Conv3d, "transposed": nn.ConvTranspose3d, "batch_norm": nn.BatchNorm3d}
    return {"conv": nn.Conv2d, "transposed": nn.ConvTranspose2d, "batch_norm": nn.BatchNorm2d}


def check_latent_dim(latent_dim, tag: str) -> int:
    """``latent_dim`` as a positive int.

    :raises ConfigError: naming the decoder and the value it was given.
    """
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
        raise ConfigError(
            [("decoder.type", f"the {tag!r} decoder needs a positive int latent_dim, got {latent_dim!r}")]
        )
    return latent_dim
