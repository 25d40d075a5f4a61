"""The MCE-VAE model and its modified ELBO, built from the real built-in plugins."""

from __future__ import annotations

import pytest
import torch

from mcvae_framework import build_model, validate_config
from mcvae_framework.model.losses import elbo_terms, pretrain_terms, ramp

SHAPE = (1, 28, 28)


def make_config(**sections):
    data = {
        "data": {"type": "digits"},
        "group": {"type": "so2", "angle_deg": [-90, 90]},
        "encoder": {"type": "conv"},
        "decoder": {"type": "mlp"},
        "prior": {"type": "gmm", "n_components": 4},
        "model": {"z_cluster_dim": 5, "z_style_dim": 2},
        "loss": {"mode": "unsupervised", "n_augment": 2},
    }
    data.update(sections)
    return validate_config(data)


def images(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, *SHAPE)
    # smooth blobs away from the border, different per image
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 28), torch.linspace(-1, 1, 28), indexing="ij")
    for i in range(n):
        cx, cy = (torch.rand(2, generator=g) - 0.5) * 0.6
        x[i, 0] = torch.exp(-((xx - cx) ** 2 / 0.05 + (yy - cy) ** 2 / 0.2))
    return x


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(make_config(), image_shape=SHAPE)


def test_forward_shapes_and_identity_start(model):
    x = images()
    out = model(x, sample=False)
    assert out.reconstruction.shape == x.shape and out.canonical.shape == x.shape
    assert out.tau.shape == (6, 1) and out.pose.shape == (6, 3, 3)
    assert torch.all(out.tau == 0)  # the pose head starts at the identity
    assert torch.allclose(out.pose, torch.eye(3).expand(6, 3, 3))
    assert out.z_cluster.shape == (6, 5) and out.z_style.shape == (6, 2)
    assert out.canonical.min() >= 0 and out.canonical.max() <= 1


def test_cluster_probabilities_and_predict(model):
    x = images()
    p = model.cluster_probabilities(x)
    assert p.shape == (6, 4) and torch.allclose(p.sum(-1), torch.ones(6))
    pred = model.predict(x)
    assert set(pred) >= {"cluster", "probabilities", "tau", "canonical", "z_cluster"}
    assert torch.equal(pred["cluster"], p.argmax(-1))


@pytest.mark.parametrize("mode", ["unsupervised", "supervised", "plain"])
def test_elbo_terms_finite_and_complete(mode):
    torch.manual_seed(0)
    model = build_model(make_config(loss={"mode": mode, "n_augment": 2}), image_shape=SHAPE)
    x = images()
    batch = {"image": x, "canonical": x}
    terms = elbo_terms(model, batch, model.config.loss, generator=torch.Generator().manual_seed(0))
    expected = {"loss", "reconstruction", "cluster_kl", "style_kl", "pose_kl"}
    if mode == "unsupervised":
        expected |= {"invariance", "canonical_invariance", "pose_consistency"}
    if mode == "supervised":
        expected |= {"canonical"}
    assert set(terms) == expected
    for name, value in terms.items():
        assert value.ndim == 0 and torch.isfinite(value), name


def test_gradients_reach_every_head_and_the_prior():
    torch.manual_seed(0)
    model = build_model(make_config(), image_shape=SHAPE)
    terms = elbo_terms(model, {"image": images()}, model.config.loss, generator=torch.Generator().manual_seed(1))
    terms["loss"].backward()
    for part in ("pose_head", "cluster_head", "style_head", "encoder", "decoder", "prior"):
        grads = [p.grad for p in getattr(model, part).parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads), part
        assert any(g.abs().sum() > 0 for g in grads), part


def test_same_generator_same_loss(model):
    batch = {"image": images()}
    a = elbo_terms(model, batch, model.config.loss, generator=torch.Generator().manual_seed(3))
    b = elbo_terms(model, batch, model.config.loss, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_plain_vae_without_group():
    config = make_config(group=None, prior={"type": "standard_normal"}, loss={"mode": "plain"})
    model = build_model(config, image_shape=SHAPE)
    assert model.group is None and model.pose_head is None
    out = model(images(), sample=False)
    assert out.tau is None and torch.equal(out.reconstruction, out.canonical)
    terms = elbo_terms(model, {"image": images()}, config.loss)
    assert "pose_kl" not in terms and torch.isfinite(terms["loss"])


def test_supervised_mode_needs_canonical_images(model):
    config = make_config(loss={"mode": "supervised"})
    with pytest.raises(KeyError, match="needs a dataset that yields canonical images"):
        elbo_terms(model, {"image": images()}, config.loss)


def test_pretrain_terms_use_a_standard_normal_cluster_prior(model):
    terms = pretrain_terms(model, {"image": images()}, model.config.loss, generator=torch.Generator().manual_seed(0))
    assert "pose_consistency" in terms and torch.isfinite(terms["loss"])
    # the warm-up uses N(0, I) on z_c, so its cluster term is the closed-form Gaussian KL
    assert terms["cluster_kl"] > 0


def test_pose_consistency_vanishes_for_an_equivariant_pose():
    """A model whose pose head reads the image's true angle exactly has no pose-consistency
    penalty, and canonicalised copies then have the invariant means of the original."""
    torch.manual_seed(0)
    model = build_model(make_config(loss={"mode": "unsupervised", "n_augment": 3}), image_shape=SHAPE)
    group = model.group
    x = images(4)

    from mcvae_framework.model.mcevae import Encoding, Posterior

    angle_of = {}

    def encode(batch):
        # the pose is looked up from how the batch was made: identity for x, h for copies
        tau = angle_of.get(batch.shape[0], torch.zeros(batch.shape[0], 1))
        zero = torch.zeros(batch.shape[0], 5)
        return Encoding(Posterior(tau, zero[:, :1]), Posterior(zero, zero), None)

    model.encode = encode
    gen = torch.Generator().manual_seed(0)
    h = group.sample(12, generator=torch.Generator().manual_seed(0))
    angle_of[12] = h
    from mcvae_framework.model.losses import invariance_terms

    enc = encode(x)
    terms = invariance_terms(model, x, enc, torch.zeros_like(x), 3, generator=gen)
    assert terms["pose_consistency"] < 1e-10
    assert terms["invariance"] == 0


def test_ramp():
    assert ramp(0, 0) == 1.0
    assert [ramp(e, 3) for e in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_pose_head_reads_angles_from_cos_sin_pairs():
    """The angle comes from atan2 of a predicted pair: continuous across +-pi, on the
    principal branch, with finite gradients; translations stay plain outputs."""
    from mcvae_framework import build
    from mcvae_framework.model.mcevae import PoseHead

    group = build("group", {"type": "se2"})
    assert group.angle_coordinates == (0,)
    head = PoseHead(4, group)
    assert head.out.out_features == 2 * 3 + 1  # (cos, u1, u2), sin, three log-variances
    with torch.no_grad():
        head.out.weight.zero_()
        head.out.bias.zero_()
        head.out.weight[0, 0] = -1.0  # cos = -f0
        head.out.weight[3, 1] = 1.0  # sin = f1
        head.out.weight[1, 2] = 1.0  # u1 = f2
    features = torch.tensor([[1.0, 1e-3, 0.5, 0.0], [1.0, -1e-3, -0.5, 0.0]], requires_grad=True)
    posterior = head(features)
    theta = posterior.mean[:, 0]
    assert torch.allclose(theta.abs(), torch.full((2,), torch.pi), atol=2e-3)
    assert theta[0] > 0 > theta[1]  # just either side of the cut, both in (-pi, pi]
    assert torch.allclose(posterior.mean[:, 1], torch.tensor([0.5, -0.5]))
    posterior.mean.sum().backward()
    assert torch.isfinite(features.grad).all()
