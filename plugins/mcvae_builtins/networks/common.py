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


def check_image_shape(image_shape, kind: str, tag: str) -> tuple[int, int, int]:
    """``image_shape`` as a ``(C, H, W)`` tuple of positive ints with ``H == W``.

    :raises ConfigError: naming the component and the shape it was given.
    """
    try:
        shape = tuple(int(s) for s in image_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) < 1 or shape[1] != shape[2]:
        raise ConfigError(
            [(f"{kind}.type", f"the {tag!r} {kind} needs square images (C, H, H), got image_shape={image_shape!r}")]
        )
    return shape


def check_latent_dim(latent_dim, tag: str) -> int:
    """``latent_dim`` as a positive int.

    :raises ConfigError: naming the decoder and the value it was given.
    """
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
        raise ConfigError(
            [("decoder.type", f"the {tag!r} decoder needs a positive int latent_dim, got {latent_dim!r}")]
        )
    return latent_dim
