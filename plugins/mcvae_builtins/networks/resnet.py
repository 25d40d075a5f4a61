"""A torchvision ResNet (18 or 34 layers, untrained: nothing is downloaded) as encoder."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveInt
from torch import nn

from mcvae_framework import ComponentConfig
from mcvae_framework.interfaces import Encoder

from .common import Activation, check_image_shape, make_activation

#: image sides below this get the small-image stem (3x3 stride-1 conv, no max pool).
SMALL_IMAGE_SIDE = 64


class ResNetEncoderConfig(ComponentConfig):
    """torchvision's ResNet-18/34 with ``weights=None``, its first layer adapted to the
    image channels and, for small images, to their size."""

    type: Literal["resnet"] = "resnet"
    depth: Literal[18, 34] = Field(18, description="ResNet depth")
    stem: Literal["auto", "small", "imagenet"] = Field(
        "auto",
        description="first layer: 'small' is a 3x3 stride-1 convolution without max pool (keeps "
        "28x28 detail), 'imagenet' the original 7x7 stride-2 convolution and max pool; 'auto' "
        f"picks 'small' below {SMALL_IMAGE_SIDE} pixels",
    )
    feature_dim: PositiveInt | None = Field(
        None, description="size of a fully connected layer on the pooled 512 features (null: none, 512 out)"
    )
    activation: Activation = Field("relu", description="non-linearity after the optional fully connected layer")


class ResNetEncoder(Encoder):
    """Pooled ResNet features ``(N, feature_dim)`` of ``(N, C, H, H)`` images."""

    def __init__(self, config: ResNetEncoderConfig, image_shape):
        super().__init__()
        # Imported here so that loading the plugin does not import torchvision's models.
        from torchvision.models import resnet18, resnet34

        self.image_shape = check_image_shape(image_shape, "encoder", "resnet")
        channels, side, _ = self.image_shape
        net = (resnet18 if config.depth == 18 else resnet34)(weights=None)
        stem = config.stem if config.stem != "auto" else ("small" if side < SMALL_IMAGE_SIDE else "imagenet")
        if stem == "small":
            net.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        else:
            net.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        width = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net
        if config.feature_dim is None:
            self.head = nn.Identity()
            self.feature_dim = width
        else:
            self.head = nn.Sequential(nn.Linear(width, config.feature_dim), make_activation(config.activation))
            self.feature_dim = config.feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.net(x))


def make_resnet_encoder(config: ResNetEncoderConfig, *, image_shape) -> ResNetEncoder:
    return ResNetEncoder(config, image_shape)
