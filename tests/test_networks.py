"""Built-in encoders and decoders: the contract kits on both test image sizes, plus the
choices each network makes and its bad-input messages."""

from __future__ import annotations

import pytest
import torch

from mcvae_framework import ConfigError, build
from mcvae_framework.config.plugins import current_registry
from mcvae_framework.testing import DecoderContract, EncoderContract


class TestMLPEncoder(EncoderContract):
    encoder_config = {"type": "mlp", "hidden": [64, 32]}


class TestMLPEncoderBatchNormDropout(EncoderContract):
    encoder_config = {"type": "mlp", "hidden": [32], "batch_norm": True, "activation": "elu"}


class TestConvEncoder(EncoderContract):
    encoder_config = {"type": "conv", "channels": [8, 16, 16], "feature_dim": 32}


class TestConvEncoderFlatFeatures(EncoderContract):
    encoder_config = {"type": "conv", "channels": [4, 8], "kernel_size": 4, "feature_dim": None,
                      "batch_norm": False, "activation": "leaky_relu"}


class TestResNetEncoder(EncoderContract):
    encoder_config = {"type": "resnet", "depth": 18, "feature_dim": 16}
    batch_size = 2


class TestGatedMLPDecoder(DecoderContract):
    decoder_config = {"type": "mlp", "hidden": [32, 64]}


class TestPlainMLPDecoder(DecoderContract):
    decoder_config = {"type": "mlp", "hidden": [32], "gated": False, "activation": "tanh"}


class TestConvDecoder(DecoderContract):
    decoder_config = {"type": "conv", "channels": [16, 8]}


class TestConvDecoderThreeUpsamplings(DecoderContract):
    decoder_config = {"type": "conv", "channels": [16, 8, 8], "batch_norm": False, "activation": "silu"}
    image_shapes = ((1, 8, 8), (2, 27, 27))  # odd sides: the last map is cropped


def test_all_tags_registered():
    reg = current_registry()
    assert {"mlp", "conv", "resnet"} <= set(reg.tags("encoder"))
    assert {"mlp", "conv"} <= set(reg.tags("decoder"))


def test_defaults_build_for_odd_sizes():
    for side in (8, 27, 40):
        for tag in ("mlp", "conv"):
            enc = build("encoder", {"type": tag}, image_shape=(1, side, side))
            assert enc(torch.rand(2, 1, side, side)).shape == (2, enc.feature_dim)
            dec = build("decoder", {"type": tag}, image_shape=(1, side, side), latent_dim=3)
            assert dec(torch.randn(2, 3)).shape == (2, 1, side, side)


def test_resnet_stem_adapts_to_channels_and_size():
    small = build("encoder", {"type": "resnet"}, image_shape=(1, 28, 28))
    assert small.net.conv1.in_channels == 1 and small.net.conv1.stride == (1, 1)
    assert isinstance(small.net.maxpool, torch.nn.Identity)
    assert small.feature_dim == 512
    big = build("encoder", {"type": "resnet", "depth": 34}, image_shape=(3, 64, 64))
    assert big.net.conv1.in_channels == 3 and big.net.conv1.stride == (2, 2)
    assert isinstance(big.net.maxpool, torch.nn.MaxPool2d)
    assert len(big.net.layer1) == 3  # resnet34's first stage, not resnet18's 2 blocks
    forced = build("encoder", {"type": "resnet", "stem": "small"}, image_shape=(3, 64, 64))
    assert forced.net.conv1.stride == (1, 1)


def test_gated_decoder_uses_gated_layers():
    dec = build("decoder", {"type": "mlp", "hidden": [16, 16]}, image_shape=(1, 8, 8), latent_dim=2)
    gated = [m for m in dec.modules() if type(m).__name__ == "GatedLinear"]
    assert len(gated) == 2


@pytest.mark.parametrize("kind,tag", [("encoder", "mlp"), ("encoder", "conv"), ("encoder", "resnet"),
                                      ("decoder", "mlp"), ("decoder", "conv")])
def test_non_square_image_shape_is_a_clear_error(kind, tag):
    context = {"image_shape": (1, 28, 32)}
    if kind == "decoder":
        context["latent_dim"] = 4
    with pytest.raises(ConfigError, match=rf"the '{tag}' {kind} needs square images .*28, 32"):
        build(kind, {"type": tag}, **context)


@pytest.mark.parametrize("tag", ["mlp", "conv"])
def test_bad_latent_dim_is_a_clear_error(tag):
    with pytest.raises(ConfigError, match="positive int latent_dim, got 0"):
        build("decoder", {"type": tag}, image_shape=(1, 28, 28), latent_dim=0)


@pytest.mark.parametrize("config,fragment", [
    ({"type": "mlp", "hidden": []}, "encoder.hidden"),
    ({"type": "conv", "channels": [8, 0]}, "encoder.channels[1]"),
    ({"type": "conv", "activation": "swish"}, "'relu', 'leaky_relu', 'elu', 'gelu', 'silu' or 'tanh'"),
    ({"type": "resnet", "depth": 50}, "encoder.depth"),
    ({"type": "resnet", "widht": 2}, "unknown key"),
])
def test_bad_encoder_config_names_the_field(config, fragment):
    with pytest.raises(ConfigError) as info:
        build("encoder", config, image_shape=(1, 28, 28))
    assert fragment in str(info.value)
