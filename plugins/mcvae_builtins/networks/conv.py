"""Convolutional encoder (strided convolutions with batch norm, the paper's shape) and the
transposed-convolution decoder; both take 2-D images or 3-D volumes, with 3-D convolutions
chosen from the data's shape."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, PositiveInt
from torch import nn

from mcvae_framework import ComponentConfig
from mcvae_framework.interfaces import Decoder, Encoder

from .common import Activation, check_image_shape, check_latent_dim, make_activation, spatial_layers


class ConvEncoderConfig(ComponentConfig):
    """A few stride-2 convolutions (each halves the side), then one fully connected layer."""

    type: Literal["conv"] = "conv"
    channels: list[PositiveInt] = Field(
        [32, 64, 128], min_length=1, description="output channels of each stride-2 convolution"
    )
    kernel_size: int = Field(3, ge=2, description="convolution kernel side (padding keeps it centred)")
    batch_norm: bool = Field(True, description="batch norm after each convolution")
    activation: Activation = Field("relu", description="non-linearity after each layer")
    feature_dim: PositiveInt | None = Field(
        256, description="size of the fully connected layer on top (null: the flattened last feature map)"
    )


def conv_output_side(side: int, kernel_size: int, stride: int = 2) -> int:
    """Side of a square map after a convolution with padding ``kernel_size // 2``."""
    return (side + 2 * (kernel_size // 2) - kernel_size) // stride + 1


class ConvEncoder(Encoder):
    """Reads ``(N, C, H, H)`` images (``(N, C, D, D, D)`` volumes: 3-D convolutions) with
    strided convolutions; ``(N, feature_dim)`` out."""

    def __init__(self, config: ConvEncoderConfig, image_shape):
        super().__init__()
        self.image_shape = check_image_shape(image_shape, "encoder", "conv", volumes=True)
        in_channels, side, spatial = self.image_shape[0], self.image_shape[-1], len(self.image_shape) - 1
        kinds = spatial_layers(self.image_shape)
        layers: list[nn.Module] = []
        for out in config.channels:
            layers.append(
                kinds["conv"](in_channels, out, config.kernel_size, stride=2, padding=config.kernel_size // 2,
                              bias=not config.batch_norm)
            )
            if config.batch_norm:
                layers.append(kinds["batch_norm"](out))
            layers.append(make_activation(config.activation))
            in_channels, side = out, conv_output_side(side, config.kernel_size)
        layers.append(nn.Flatten())
        flat = in_channels * side**spatial
        if config.feature_dim is None:
            self.feature_dim = flat
        else:
            layers += [nn.Linear(flat, config.feature_dim), make_activation(config.activation)]
            self.feature_dim = config.feature_dim
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvDecoderConfig(ComponentConfig):
    """A fully connected layer to a small feature map, then stride-2 transposed
    convolutions, each doubling the side; the result is centre-cropped to the image side."""

    type: Literal["conv"] = "conv"
    channels: list[PositiveInt] = Field(
        [64, 32], min_length=1,
        description="channels of the first feature map and after each upsampling; one transposed "
        "convolution per entry (the last one maps to the image channels)",
    )
    batch_norm: bool = Field(True, description="batch norm after each hidden transposed convolution")
    activation: Activation = Field("relu", description="non-linearity after each hidden layer")


class ConvDecoder(Decoder):
    """Maps ``(N, latent_dim)`` latents to ``(N, C, H, H)`` images (``(N, C, D, D, D)``
    volumes: 3-D transposed convolutions) in ``[0, 1]``."""

    def __init__(self, config: ConvDecoderConfig, image_shape, latent_dim: int):
        super().__init__()
        self.image_shape = check_image_shape(image_shape, "decoder", "conv", volumes=True)
        self.latent_dim = check_latent_dim(latent_dim, "conv")
        out_channels, side, self._spatial = self.image_shape[0], self.image_shape[-1], len(self.image_shape) - 1
        kinds = spatial_layers(self.image_shape)
        n_up = len(config.channels)
        # Smallest start side whose doublings cover the image; the excess is cropped.
        self._start_side = math.ceil(side / 2**n_up)
        first = config.channels[0]
        self.project = nn.Sequential(
            nn.Linear(self.latent_dim, first * self._start_side**self._spatial), make_activation(config.activation)
        )
        self._first_channels = first
        layers: list[nn.Module] = []
        widths = [*config.channels, out_channels]
        for i in range(n_up):
            # kernel 4, stride 2, padding 1 doubles the side exactly.
            layers.append(kinds["transposed"](widths[i], widths[i + 1], 4, stride=2, padding=1,
                                              bias=not (config.batch_norm and i < n_up - 1)))
            if i < n_up - 1:
                if config.batch_norm:
                    layers.append(kinds["batch_norm"](widths[i + 1]))
                layers.append(make_activation(config.activation))
        self.upsample = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project(z).view(z.shape[0], self._first_channels, *(self._start_side,) * self._spatial)
        h = self.upsample(h)
        side = self.image_shape[-1]
        top = (h.shape[-1] - side) // 2
        return torch.sigmoid(h[(...,) + (slice(top, top + side),) * self._spatial])


def make_conv_encoder(config: ConvEncoderConfig, *, image_shape) -> ConvEncoder:
    return ConvEncoder(config, image_shape)


def make_conv_decoder(config: ConvDecoderConfig, *, image_shape, latent_dim: int) -> ConvDecoder:
    return ConvDecoder(config, image_shape, latent_dim)
