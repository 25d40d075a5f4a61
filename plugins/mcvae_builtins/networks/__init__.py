"""Built-in networks plugin: encoders ``mlp``, ``conv``, ``resnet``, ``rotconv``; decoders ``mlp``
(gated, as in the MCE-VAE paper) and ``conv`` (transposed convolutions).

Every network works for square images of any side and channel count; decoders end with a
sigmoid (canonical images in ``[0, 1]``).
"""

from __future__ import annotations

from mcvae_framework import hookimpl

from .conv import ConvDecoderConfig, ConvEncoderConfig, make_conv_decoder, make_conv_encoder
from .mlp import MLPDecoderConfig, MLPEncoderConfig, make_mlp_decoder, make_mlp_encoder
from .resnet import ResNetEncoderConfig, make_resnet_encoder
from .rotconv import RotConvEncoderConfig, make_rotconv_encoder


@hookimpl
def mcvae_register_encoders(register):
    register(MLPEncoderConfig, make_mlp_encoder)
    register(ConvEncoderConfig, make_conv_encoder)
    register(ResNetEncoderConfig, make_resnet_encoder)
    register(RotConvEncoderConfig, make_rotconv_encoder)


@hookimpl
def mcvae_register_decoders(register):
    register(MLPDecoderConfig, make_mlp_decoder)
    register(ConvDecoderConfig, make_conv_decoder)
