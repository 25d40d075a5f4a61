"""Fully connected encoder and the gated fully connected decoder of the MCE-VAE paper (on
2-D images or 3-D volumes alike: they read and write the flattened item)."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, PositiveInt
from torch import nn

from mcvae_framework import ComponentConfig
from mcvae_framework.interfaces import Decoder, Encoder

from .common import Activation, check_image_shape, check_latent_dim, make_activation


class MLPEncoderConfig(ComponentConfig):
    """A stack of fully connected layers on the flattened image."""

    type: Literal["mlp"] = "mlp"
    hidden: list[PositiveInt] = Field(
        [512, 256], min_length=1, description="widths of the hidden layers; the last one is the feature size"
    )
    activation: Activation = Field("relu", description="non-linearity after every layer")
    batch_norm: bool = Field(False, description="batch norm before each activation")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout after each activation")


class MLPEncoder(Encoder):
    """Flattens ``(N, C, H, W)`` images (or ``(N, C, D, H, W)`` volumes) and maps them to
    ``(N, hidden[-1])`` features."""

    def __init__(self, config: MLPEncoderConfig, image_shape):
        super().__init__()
        self.image_shape = check_image_shape(image_shape, "encoder", "mlp", volumes=True)
        self.feature_dim = config.hidden[-1]
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(self.image_shape)
        for out in config.hidden:
            # A bias before batch norm is cancelled by it (and would get no gradient).
            layers.append(nn.Linear(width, out, bias=not config.batch_norm))
            if config.batch_norm:
                layers.append(nn.BatchNorm1d(out))
            layers.append(make_activation(config.activation))
            if config.dropout:
                layers.append(nn.Dropout(config.dropout))
            width = out
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class GatedLinear(nn.Module):
    """``h(x) * sigmoid(g(x))``: the gated dense layer the MCE-VAE decoder is built from
    (a learned, input-dependent mask on each unit)."""

    def __init__(self, in_features: int, out_features: int, activation: str | None = None):
        super().__init__()
        self.value = nn.Linear(in_features, out_features)
        self.gate = nn.Linear(in_features, out_features)
        self.activation = make_activation(activation) if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.value(x)) * torch.sigmoid(self.gate(x))


class MLPDecoderConfig(ComponentConfig):
    """Fully connected decoder; by default every hidden layer is gated as in the paper."""

    type: Literal["mlp"] = "mlp"
    hidden: list[PositiveInt] = Field([256, 512], min_length=1, description="widths of the hidden layers")
    gated: bool = Field(True, description="gated layers h(x) * sigmoid(g(x)) instead of plain ones")
    activation: Activation | None = Field(
        None, description="non-linearity of each hidden layer (gated layers: applied to h; default: none "
        "for gated layers, relu for plain ones)"
    )


class MLPDecoder(Decoder):
    """Maps ``(N, latent_dim)`` latents to ``(N, C, H, W)`` images (or volumes) in ``[0, 1]``."""

    def __init__(self, config: MLPDecoderConfig, image_shape, latent_dim: int):
        super().__init__()
        self.image_shape = check_image_shape(image_shape, "decoder", "mlp", volumes=True)
        self.latent_dim = check_latent_dim(latent_dim, "mlp")
        layers: list[nn.Module] = []
        width = self.latent_dim
        for out in config.hidden:
            if config.gated:
                layers.append(GatedLinear(width, out, config.activation))
            else:
                layers += [nn.Linear(width, out), make_activation(config.activation or "relu")]
            width = out
        layers.append(nn.Linear(width, math.prod(self.image_shape)))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(z).view(z.shape[0], *self.image_shape))


def make_mlp_encoder(config: MLPEncoderConfig, *, image_shape) -> MLPEncoder:
    return MLPEncoder(config, image_shape)


def make_mlp_decoder(config: MLPDecoderConfig, *, image_shape, latent_dim: int) -> MLPDecoder:
    return MLPDecoder(config, image_shape, latent_dim)
