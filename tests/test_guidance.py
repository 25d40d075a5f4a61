"""Graph-guided training: the self-labelling and balance terms, the prior's warm start from
given clusters, collapse repair, and a tiny end-to-end run that clusters far above chance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mcvae_framework import ConfigError, build, validate_config
from mcvae_framework.config.sections import GUIDED_TERMS
from mcvae_framework.report.evaluation import clustering_metrics
from mcvae_framework.train.guidance import ClusterGuidance
from mcvae_framework.model.guide import Guide
from mcvae_framework.model.losses import LossModule, guidance_terms
from mcvae_framework.model.mcevae import build_model
from mcvae_framework.train.trainer import Trainer


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def shapes_file(folder, per_shape: int = 80) -> str:
    """An .npz of three upright shapes (bar, triangle, ring), each copy slightly jittered."""
    from test_invariant_graph import shape_images

    generator = torch.Generator().manual_seed(0)
    shapes = shape_images(24)
    labels = torch.arange(3).repeat_interleave(per_shape)
    noise = 0.15 * torch.rand(len(labels), 1, 24, 24, generator=generator)
    images = (shapes[labels] * (0.8 + 0.2 * torch.rand(len(labels), 1, 1, 1, generator=generator)) + noise).clamp(0, 1)
    path = folder / "shapes.npz"
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(path, images=images[:, 0].numpy(), labels=labels.numpy())
    return str(path)


def guided_config(out_dir, *, epochs=2, pretrain_epochs=1, **loss) -> dict:
    """Three shapes rotated over the full circle, the graph guiding a small MCE-VAE."""
    return {
        "data": {"type": "arrays", "path": shapes_file(out_dir.parent / "data"), "test_fraction": 0.25,
                 "transform": {"group": "so2", "angle_deg": [-180, 180], "seed": 0}},
        "group": {"type": "so2", "angle_deg": [-180, 180]},
        "encoder": {"type": "conv", "channels": [16, 32], "feature_dim": 64},
        "decoder": {"type": "mlp", "hidden": [32, 64]},
        "prior": {"type": "gmm", "n_components": 3, "learn_weights": False},
        "model": {"z_cluster_dim": 3, "z_style_dim": 1, "canonicalize": False},
        "loss": {"mode": "unsupervised", "n_augment": 2, "pretrain_epochs": pretrain_epochs,
                 "self_label_weight": 5.0, "self_label_copies": 1, **loss},
        "graph": {"enabled": True, "neighbours": 8, "kmeans_restarts": 5},
        "training": {"epochs": epochs, "batch_size": 16, "min_steps_per_epoch": 20, "device": "cpu", "seed": 0,
                     "progress": False,
                     "lr": 3e-3, "out_dir": str(out_dir)},
    }


def small_model(config_dict):
    config = validate_config(config_dict)
    data = build("data", config.data, split="train")
    torch.manual_seed(0)
    return config, data, build_model(config, image_shape=data.image_shape)


# ------------------------------------------------------------------ the loss terms


def test_self_label_is_the_cross_entropy_of_the_prior_responsibilities_on_trusted_images(tmp_path):
    config, data, model = small_model(guided_config(tmp_path / "run", self_label_copies=0))
    images = data.as_tensors()["image"][:6]
    batch = {"image": images, "index": torch.arange(6)}
    guide = Guide(labels=torch.tensor([0, 1, 2, 0, 1, 2]), confident=torch.tensor([1, 1, 0, 1, 0, 1]).bool())
    enc = model.encode(images)
    terms, total = guidance_terms(model, batch, enc, config.loss, guide)
    log_q = torch.log_softmax(model.prior.log_prob_per_component(enc.z_cluster.mean), -1)
    expected = -(log_q[0, 0] + log_q[1, 1] + log_q[3, 0] + log_q[5, 2]) / 4
    assert torch.allclose(terms["self_label"], expected)
    assert torch.allclose(total, config.loss.self_label_weight * expected)
    total.backward()
    assert model.cluster_head.out.weight.grad.abs().sum() > 0
    assert model.prior.means.grad is None  # the prior is fitted by the mixture KL, not by this term


def test_self_label_on_moved_copies_reaches_the_encoder_through_the_copies(tmp_path):
    config, data, model = small_model(guided_config(tmp_path / "run", self_label_copies=2))
    images = data.as_tensors()["image"][:4]
    batch = {"image": images, "index": torch.arange(4)}
    guide = Guide(labels=torch.tensor([0, 1, 2, 0]), confident=torch.ones(4, dtype=torch.bool))
    terms, _ = guidance_terms(model, batch, model.encode(images), config.loss, guide,
                              torch.Generator().manual_seed(0))
    assert {"self_label", "self_label_moved"} <= set(terms)
    terms["self_label_moved"].backward()
    first = next(p for p in model.encoder.parameters() if p.dim() > 1)
    assert first.grad is not None and first.grad.abs().sum() > 0


def test_balance_is_zero_for_even_use_and_log_k_for_one_component(tmp_path):
    config_dict = guided_config(tmp_path / "run", self_label_weight=0.0, balance_weight=1.0)
    config_dict["graph"]["enabled"] = False
    config, data, model = small_model(config_dict)
    means = model.prior.means.detach()
    even = {"image": torch.zeros(3, 1, 24, 24)}

    class Fixed:  # an encoding whose z_c sits exactly on the component means
        def __init__(self, z):
            self.z_cluster = type("P", (), {"mean": z})()

    with torch.no_grad():
        model.prior.log_variances.fill_(-20.0)  # sharp components: responsibilities are one-hot
    terms, _ = guidance_terms(model, even, Fixed(means.clone()), config.loss, None)
    assert terms["balance"].abs() < 1e-5
    terms, _ = guidance_terms(model, even, Fixed(means[:1].repeat(3, 1)), config.loss, None)
    assert math.isclose(float(terms["balance"].detach()), math.log(3), rel_tol=1e-4)


@pytest.mark.parametrize("term", GUIDED_TERMS, ids=lambda term: term.name)
def test_every_graph_guided_term_needs_the_graph(tmp_path, term):
    config = guided_config(tmp_path / "run", **{"self_label_weight": 0.0, term.weight: 5.0})
    config["graph"]["enabled"] = False
    with pytest.raises(ConfigError, match=rf"loss.{term.weight} > 0 learns from the invariant graph's "
                                          rf"{term.learns_from}.*graph.enabled: true"):
        validate_config(config)
    config["graph"]["enabled"] = True
    validate_config(config)


def test_the_guide_holds_what_the_switched_on_terms_read(tmp_path):
    trainer = Trainer(guided_config(tmp_path / "run", epochs=1, neighbour_weight=1.0), console=False)
    trainer.run()
    guide, term = trainer.loss_module.guide, {term.name: term for term in GUIDED_TERMS}
    assert guide.serves(term["self_label"]) and guide.serves(term["neighbour"])
    assert guide.neighbours.shape == (len(guide.labels), 8) and len(guide.images) == len(guide.labels)
    assert guide.angles is None and not guide.serves(term["pose_guide"])  # pose guidance is off
    assert "train_neighbour" in (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]


# ------------------------------------------------------------------ priors from clusters


@pytest.mark.parametrize("prior", [{"type": "gmm"}, {"type": "gmm", "covariance": "full"},
                                   {"type": "student_t", "learn_weights": True}])
def test_init_from_assignments_puts_each_component_on_its_cluster(prior):
    model = build("prior", {**prior, "n_components": 3}, dim=2)
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[-6.0, 0.0], [0.0, 6.0], [6.0, 0.0]])
    assignments = torch.arange(3).repeat_interleave(50)
    latents = centres[assignments] + 0.5 * torch.randn(150, 2, generator=generator)
    model.init_from_assignments(latents, assignments)
    assert torch.allclose(model.component_means().detach(), centres, atol=0.3)
    assert bool((model.responsibilities(latents).argmax(-1) == assignments).all())


def test_init_from_assignments_gives_an_empty_component_a_place():
    model = build("prior", {"type": "gmm", "n_components": 3}, dim=2)
    latents = torch.randn(40, 2, generator=torch.Generator().manual_seed(1))
    model.init_from_assignments(latents, torch.zeros(40, dtype=torch.int64))
    assert bool(torch.isfinite(model.component_means()).all())
    assert bool(torch.isfinite(model.log_prob(latents)).all())


def test_init_from_assignments_refuses_bad_assignments():
    model = build("prior", {"type": "gmm", "n_components": 3}, dim=2)
    with pytest.raises(ValueError, match="0..2"):
        model.init_from_assignments(torch.randn(10, 2), torch.full((10,), 5))
    with pytest.raises(ValueError, match="one component index per row"):
        model.init_from_assignments(torch.randn(10, 2), torch.zeros(4, dtype=torch.int64))


# ------------------------------------------------------------------ the trainer


def test_a_collapsed_mixture_is_reseeded_and_reported(tmp_path):
    config = guided_config(tmp_path / "run", epochs=1, pretrain_epochs=1, self_label_weight=0.0,
                           reseed_below=0.5)
    config["graph"]["enabled"] = False
    trainer = Trainer(config, console=False)
    original = ClusterGuidance.fit_prior

    def collapse(self):  # the warm start puts every training image in component 0
        original(self)
        with torch.no_grad():
            self.model.prior.means[1:] += 1e3
    ClusterGuidance.fit_prior = collapse
    try:
        trainer.run()
    finally:
        ClusterGuidance.fit_prior = original
    assert trainer.history[-1]["train_reseeded_components"] == 2
    assert "re-seeded by splitting component" in (tmp_path / "run" / "train.log").read_text()
    latents, _ = trainer.guidance.sample_latents()
    sizes = torch.bincount(trainer.model.prior.responsibilities(latents).argmax(-1), minlength=3)
    assert bool((sizes > 0).all())


def test_a_guided_run_clusters_far_above_chance_and_resumes_with_its_graph(tmp_path):
    config = guided_config(tmp_path / "run", epochs=6)
    trainer = Trainer(config, console=False)
    trainer.run()
    assert trainer.graph is not None and trainer.history[0]["train_self_label"] > 0
    test = build("data", validate_config(config).data, split="test").as_tensors()
    clusters = trainer.model.eval().predict(test["image"])["cluster"]
    accuracy = clustering_metrics(test["label"].numpy(), clusters.numpy())["accuracy"]
    assert accuracy > 0.8  # chance is about 0.33
    resumed = Trainer({**config, "training": {**config["training"], "epochs": 7}}, resume=True, console=False)
    resumed.run()
    assert torch.equal(resumed.graph.labels, trainer.graph.labels)


def test_neighbour_term_is_minus_the_log_agreement_with_a_graph_neighbour(tmp_path):
    config, data, model = small_model(guided_config(tmp_path / "run", self_label_weight=0.0, neighbour_weight=1.0))
    model.eval()  # no batch-norm statistics: the two encodings below must match exactly
    images = data.as_tensors()["image"][:5]
    guide = Guide(labels=torch.zeros(5, dtype=torch.int64), confident=torch.ones(5, dtype=torch.bool),
                  neighbours=torch.tensor([[1], [0], [3], [2], [0]]), images=images)
    batch = {"image": images, "index": torch.arange(5)}
    enc = model.encode(images)
    terms, total = guidance_terms(model, batch, enc, config.loss, guide, torch.Generator().manual_seed(0))
    q = torch.softmax(model.prior.log_prob_per_component(enc.z_cluster.mean), -1)
    expected = -torch.log((q * q[torch.tensor([1, 0, 3, 2, 0])]).sum(-1)).mean()
    assert torch.allclose(terms["neighbour"], expected, atol=1e-6)
    total.backward()
    assert model.prior.means.grad is None  # the term trains the encoder, not the prior


# ------------------------------------------------------------------ transductive runs and prealignment


def test_a_transductive_run_trains_on_every_image_without_labels(tmp_path):
    config = guided_config(tmp_path / "run", epochs=1, pretrain_epochs=0)
    config["training"].update(transductive=True, min_steps_per_epoch=0)
    trainer = Trainer(config, console=False)
    trainer.run()
    parsed = validate_config(config)
    n_train = len(build("data", parsed.data, split="train"))
    n_test = len(build("data", parsed.data, split="test"))
    assert len(trainer.train_data) == n_train + n_test == len(trainer.graph.labels)
    tensors = trainer.train_data.as_tensors()
    assert "label" not in tensors and "label" not in trainer.train_data[n_train]
    # the union keeps the datasets' order: the test images follow the training images
    test_images = build("data", parsed.data, split="test").as_tensors()["image"]
    assert torch.equal(tensors["image"][n_train:], test_images)


def test_transductive_training_refuses_the_supervised_mode(tmp_path):
    config = guided_config(tmp_path / "run")
    config["training"]["transductive"] = True
    config["loss"].update(mode="supervised", self_label_weight=0.0)
    with pytest.raises(Exception, match="training.transductive"):
        validate_config(config)


def test_prealign_feeds_the_invariant_heads_the_groups_normal_form(tmp_path):
    config = guided_config(tmp_path / "run")
    config["group"] = {"type": "se2", "angle_deg": [-90, 90], "shift": 0.2}
    config["data"]["transform"] = {"group": "se2", "angle_deg": [-90, 90], "shift": 0.2, "seed": 0}
    config["model"]["prealign"] = True
    _, data, model = small_model(config)
    model.eval()
    x = data.as_tensors()["image"][:8]
    encoding = model.encode(x)
    features = model.encoder(model.group.prealign(x))
    assert torch.allclose(encoding.z_cluster.mean, model.cluster_head(features).mean, atol=1e-6)
    # the pose head still reads the image as it is: its shifts are what the pose must explain
    assert torch.allclose(encoding.tau.mean, model.pose_head(model.encoder(x)).mean, atol=1e-6)
    # a shifted copy lands on (nearly) the same normal form as the image itself (shapes on a
    # black background: on a grey one the frame's own mass keeps the centre near the middle)
    x = (x - 0.15).clamp_min(0)
    shift = torch.zeros(len(x), model.group.dim)
    shift[:, 1:] = torch.tensor([0.15, -0.1])  # se2 coordinates: (angle, x shift, y shift)
    shifted = model.group.act(x, model.group.exp(shift))
    aligned_gap = (model.group.prealign(shifted) - model.group.prealign(x)).abs().mean()
    assert aligned_gap < 0.3 * (shifted - x).abs().mean()


# ------------------------------------------------------------------ pose guidance


def test_pose_guidance_is_zero_for_angles_that_differ_from_the_targets_by_one_offset_per_cluster():
    from mcvae_framework.model.losses import pose_guidance

    target = torch.tensor([0.1, -0.4, 1.0, 2.9, -3.0, 0.5])
    clusters = torch.tensor([0, 0, 1, 1, 2, 2])
    offsets = torch.tensor([0.7, -2.0, 3.1])  # any offset per cluster, across the +-pi seam too
    theta = torch.remainder(target + offsets[clusters] + math.pi, 2 * math.pi) - math.pi
    weight = torch.ones(6)
    assert pose_guidance(theta, target, clusters, weight, 3).abs() < 1e-6
    # one image of cluster 0 off by 0.6 rad: its cluster's offset is the circular mean, and the
    # term is 1 - cos of each angle's distance from it, averaged
    moved = theta.clone()
    moved[0] += 0.6
    difference = moved[:2] - target[:2]
    offset = torch.atan2(torch.sin(difference).sum(), torch.cos(difference).sum())
    expected = (1 - torch.cos(difference - offset)).sum() / 6
    assert torch.allclose(pose_guidance(moved, target, clusters, weight, 3), expected, atol=1e-6)
    # an untrusted image counts for nothing
    weight[0] = 0
    assert pose_guidance(moved, target, clusters, weight, 3).abs() < 1e-6


def test_pose_guidance_reaches_the_pose_head_and_pulls_angles_to_their_clusters_frame(tmp_path):
    config, data, model = small_model(guided_config(tmp_path / "run", self_label_weight=0.0, pose_guide_weight=2.0))
    images = data.as_tensors()["image"][:6]
    enc = model.encode(images)
    theta = enc.tau.mean[:, 0].detach()
    guide = Guide(labels=torch.zeros(6, dtype=torch.int64), confident=torch.ones(6, dtype=torch.bool),
                  angles=theta + torch.tensor([0.0, 0.0, 0.0, 0.5, -0.5, 1.0]),
                  angle_clusters=torch.tensor([0, 0, 0, 1, 1, 2]))
    terms, total = guidance_terms(model, {"image": images, "index": torch.arange(6)}, enc, config.loss, guide)
    assert terms["pose_guide"] > 0  # cluster 1's two images disagree by 1 rad; cluster 2 has one image: no cost
    assert torch.allclose(total, 2.0 * terms["pose_guide"])
    total.backward()
    assert model.pose_head.out.weight.grad.abs().sum() > 0


def test_pose_guidance_needs_the_graph_and_angles_to_learn_from(tmp_path, monkeypatch):
    from dataclasses import replace

    import mcvae_framework.train.guidance as guidance_module
    from mcvae_framework import TrainingError

    config = guided_config(tmp_path / "run", pose_guide_weight=1.0, self_label_weight=0.0)
    config["graph"]["enabled"] = False
    with pytest.raises(Exception, match="pose_guide_weight"):
        validate_config(config)
    # a group without a rotation: the graph has no synchronised angles, and the run says so
    from mcvae_framework.train import graph_build  # the trainer's graph is built there (as mcvae graph's)

    real = graph_build.invariant_graph_clusters
    monkeypatch.setattr(graph_build, "invariant_graph_clusters",
                        lambda *args, **kwargs: replace(real(*args, **kwargs), angles=None))
    with pytest.raises(TrainingError, match=r"pose_guide_weight > 0 .* no rotation angle .* loss.pose_guide_weight: 0"):
        Trainer(guided_config(tmp_path / "run2", pose_guide_weight=1.0), console=False).run()


def test_a_pose_guided_run_reports_the_term(tmp_path):
    trainer = Trainer(guided_config(tmp_path / "run", epochs=1, pose_guide_weight=1.0), console=False)
    trainer.run()
    assert trainer.guidance.graph.angles is not None
    assert all(row["train_pose_guide"] >= 0 for row in trainer.history)
    assert "train_pose_guide" in (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
