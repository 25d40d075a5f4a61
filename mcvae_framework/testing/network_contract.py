"""Contract test kits for encoder and decoder plugins.

    from mcvae_framework.testing import DecoderContract, EncoderContract

    class TestMyEncoder(EncoderContract):
        encoder_config = {"type": "my_encoder", "width": 16}

    class TestMyDecoder(DecoderContract):
        decoder_config = {"type": "my_decoder"}

Each kit builds the component through :func:`mcvae_framework.build` (so the plugin must
be loaded) for every shape in ``image_shapes`` -- by default 28x28 grayscale and 64x64
RGB; a network that takes volumes lists ``(C, D, H, W)`` shapes there too, e.g.
``(1, 12, 12, 12)`` -- and checks the declared attributes, output shapes and ranges, that gradients
reach every parameter, and that in eval mode an image's output does not depend on the
rest of its batch. An encoder's optional pose readout (``forward_with_pose``) is checked
with the rest: its shapes and range, and the gradients and batch independence of all it
returns.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config.components import build
from ..interfaces import Decoder, Encoder


def _check_gradients(module: nn.Module, output: torch.Tensor, what: str) -> None:
    # A random projection: the gradient of a plain sum can vanish exactly (e.g. through
    # a final batch norm, whose outputs sum to zero over the batch).
    weights = torch.randn(output.shape, generator=torch.Generator().manual_seed(1))
    (output * weights).sum().backward()
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        assert param.grad is not None, f"{what}: no gradient reaches parameter {name!r}"
        assert torch.isfinite(param.grad).all(), f"{what}: non-finite gradient in {name!r}"
        assert param.grad.abs().sum() > 0, f"{what}: the gradient of parameter {name!r} is exactly zero"


class _NetworkContract:
    #: ``(C, H, W)`` (or ``(C, D, H, W)`` volume) shapes every test runs on.
    image_shapes: tuple[tuple[int, ...], ...] = ((1, 28, 28), (3, 64, 64))
    #: batch size of the test inputs (at least 2, for batch norm in training mode).
    batch_size: int = 4

    def _inputs(self, shape, seed: int = 0) -> torch.Tensor:
        return torch.rand(self.batch_size, *shape, generator=torch.Generator().manual_seed(seed))

    def _build(self, shape) -> nn.Module:
        raise NotImplementedError

    def _network(self, shape) -> nn.Module:
        """The network for ``shape``, built once per test class (large backbones are slow to
        build) with its gradients cleared."""
        cache = type(self).__dict__.get("_networks")
        if cache is None:
            cache = {}
            type(self)._networks = cache
        key = tuple(shape)
        if key not in cache:
            cache[key] = self._build(key)
        net = cache[key]
        net.zero_grad(set_to_none=True)
        return net


class EncoderContract(_NetworkContract):
    """Tests every encoder plugin must pass; set ``encoder_config`` in the subclass."""

    #: the encoder's config section (a dict with ``type``).
    encoder_config: dict = None

    def build_encoder(self, image_shape) -> nn.Module:
        """The encoder for ``image_shape``, built through the registry (seeded)."""
        assert self.encoder_config is not None, "set encoder_config = {'type': ...} in the test class"
        torch.manual_seed(0)
        return build("encoder", self.encoder_config, image_shape=image_shape)

    def _build(self, shape):
        return self.build_encoder(shape)

    def test_declared_attributes(self):
        for shape in self.image_shapes:
            enc = self._network(shape)
            assert isinstance(enc, Encoder), f"{type(enc).__name__} does not subclass interfaces.Encoder"
            assert tuple(enc.image_shape) == tuple(shape), f"image_shape {enc.image_shape} != {shape}"
            assert isinstance(enc.feature_dim, int) and enc.feature_dim > 0, f"bad feature_dim {enc.feature_dim!r}"

    def test_output_shape_and_dtype(self):
        for shape in self.image_shapes:
            enc = self._network(shape)
            out = enc(self._inputs(shape))
            assert out.shape == (self.batch_size, enc.feature_dim), f"{shape}: output {tuple(out.shape)}"
            assert out.dtype == torch.float32 and torch.isfinite(out).all()

    @staticmethod
    def _all_outputs(enc: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``forward(x)``, or for an encoder with a pose readout everything it returns side
        by side (features, pose features, orientation)."""
        if not hasattr(enc, "forward_with_pose"):
            return enc(x)
        features, pose_features, orientation = enc.forward_with_pose(x)
        parts = [features, pose_features] + ([orientation[:, None]] if orientation is not None else [])
        return torch.cat(parts, dim=1)

    def test_gradients_reach_every_parameter(self):
        for shape in self.image_shapes:
            enc = self._network(shape).train()
            x = self._inputs(shape).requires_grad_(True)
            _check_gradients(enc, self._all_outputs(enc, x), f"encoder on {shape}")
            assert x.grad is not None and x.grad.abs().sum() > 0, "no gradient reaches the input images"

    def test_batch_size_independent_in_eval_mode(self):
        for shape in self.image_shapes:
            enc = self._network(shape).eval()
            x = self._inputs(shape)
            with torch.no_grad():
                whole = self._all_outputs(enc, x)
                one_by_one = torch.cat([self._all_outputs(enc, x[i:i + 1]) for i in range(len(x))])
            torch.testing.assert_close(whole, one_by_one, rtol=1e-4, atol=1e-5)

    def test_pose_readout_when_offered(self):
        for shape in self.image_shapes:
            enc = self._network(shape).eval()
            if not hasattr(enc, "forward_with_pose"):
                return
            dim = enc.pose_feature_dim
            assert isinstance(dim, int) and dim >= 0, f"bad pose_feature_dim {dim!r}"
            x = self._inputs(shape)
            with torch.no_grad():
                features, pose_features, orientation = enc.forward_with_pose(x)
                torch.testing.assert_close(features, enc(x), msg="forward_with_pose(x).features != forward(x)")
            assert pose_features.shape == (self.batch_size, dim), f"pose features {tuple(pose_features.shape)}"
            assert torch.isfinite(pose_features).all()
            if orientation is not None:
                assert orientation.shape == (self.batch_size,), f"orientation {tuple(orientation.shape)}"
                assert torch.isfinite(orientation).all()
                assert (orientation.abs() <= torch.pi + 1e-6).all(), "orientation must be an angle in (-pi, pi]"


class DecoderContract(_NetworkContract):
    """Tests every decoder plugin must pass; set ``decoder_config`` in the subclass."""

    #: the decoder's config section (a dict with ``type``).
    decoder_config: dict = None
    #: latent size the tests decode from.
    latent_dim: int = 7

    def build_decoder(self, image_shape) -> nn.Module:
        """The decoder for ``image_shape`` and ``latent_dim``, built through the registry (seeded)."""
        assert self.decoder_config is not None, "set decoder_config = {'type': ...} in the test class"
        torch.manual_seed(0)
        return build("decoder", self.decoder_config, image_shape=image_shape, latent_dim=self.latent_dim)

    def _build(self, shape):
        return self.build_decoder(shape)

    def _latents(self, seed: int = 0) -> torch.Tensor:
        return 3 * torch.randn(self.batch_size, self.latent_dim, generator=torch.Generator().manual_seed(seed))

    def test_declared_attributes(self):
        for shape in self.image_shapes:
            dec = self._network(shape)
            assert isinstance(dec, Decoder), f"{type(dec).__name__} does not subclass interfaces.Decoder"
            assert tuple(dec.image_shape) == tuple(shape), f"image_shape {dec.image_shape} != {shape}"
            assert dec.latent_dim == self.latent_dim

    def test_output_shape_and_range(self):
        for shape in self.image_shapes:
            dec = self._network(shape)
            out = dec(self._latents())
            assert out.shape == (self.batch_size, *shape), f"{shape}: output {tuple(out.shape)}"
            assert out.dtype == torch.float32
            assert out.min() >= 0.0 and out.max() <= 1.0, "decoder outputs must lie in [0, 1]"
            assert out.std() > 0, "the output does not vary at all"

    def test_gradients_reach_every_parameter(self):
        for shape in self.image_shapes:
            dec = self._network(shape).train()
            z = self._latents().requires_grad_(True)
            _check_gradients(dec, dec(z), f"decoder to {shape}")
            assert z.grad is not None and z.grad.abs().sum() > 0, "no gradient reaches the latents"

    def test_batch_size_independent_in_eval_mode(self):
        for shape in self.image_shapes:
            dec = self._network(shape).eval()
            z = self._latents()
            with torch.no_grad():
                whole = dec(z)
                one_by_one = torch.cat([dec(z[i:i + 1]) for i in range(len(z))])
            torch.testing.assert_close(whole, one_by_one, rtol=1e-4, atol=1e-5)

