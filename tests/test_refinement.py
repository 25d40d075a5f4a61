"""Refining the graph's labels with the model's encoder (graph.refine_epochs)."""

from __future__ import annotations

import pytest
import torch

from mcvae_framework import build, validate_config
from mcvae_framework.model.losses import balance_kl, neighbour_disagreement
from mcvae_framework.train.refinement import refine_labels
from mcvae_framework.train.trainer import Trainer

from test_guidance import guided_config, small_model

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def test_neighbour_agreement_and_balance_values():
    sure = torch.log(torch.tensor([[1.0 - 2e-6, 1e-6, 1e-6]]))
    assert float(neighbour_disagreement(sure, sure)) == pytest.approx(0.0, abs=1e-5)
    uniform = torch.full((4, 3), 1 / 3).log()
    assert float(neighbour_disagreement(uniform, uniform)) == pytest.approx(torch.log(torch.tensor(3.0)).item(), rel=1e-5)
    assert float(balance_kl(uniform)) == pytest.approx(0.0, abs=1e-6)
    assert float(balance_kl(sure.expand(4, 3))) == pytest.approx(torch.log(torch.tensor(3.0)).item(), abs=1e-4)


def test_refinement_corrects_wrong_untrusted_labels_from_trusted_ones_and_neighbours(tmp_path):
    config, data, model = small_model(guided_config(tmp_path / "run"))
    tensors = data.as_tensors()
    images, truth = tensors["image"], tensors["label"]
    # The graph's labels: right on the trusted two thirds, scrambled on the rest.
    trusted = torch.arange(len(truth)) % 3 != 0
    labels = torch.where(trusted, truth, (truth + 1) % 3)
    # Neighbours: other images of the same shape (what a good invariant graph finds).
    neighbours = torch.stack([torch.nonzero(truth == truth[i]).squeeze(1)[:6] for i in range(len(truth))])
    generator = torch.Generator().manual_seed(0)
    refined = refine_labels(model, images, labels, trusted, neighbours, epochs=8, batch_size=16, lr=3e-3,
                            generator=generator)
    assert refined.labels.shape == truth.shape and refined.confidence.shape == truth.shape
    assert float((refined.labels == truth).double().mean()) > 0.95  # the graph's labels: 0.67
    assert refined.changed > 0.25
    assert model.training  # left as it was found


def test_refinement_refuses_a_graph_that_trusts_nothing(tmp_path):
    _, data, model = small_model(guided_config(tmp_path / "run"))
    images = data.as_tensors()["image"][:10]
    with pytest.raises(ValueError, match="confident_fraction"):
        refine_labels(model, images, torch.zeros(10, dtype=torch.int64), torch.zeros(10, dtype=torch.bool),
                      torch.zeros(10, 2, dtype=torch.int64), epochs=1, batch_size=4, lr=1e-3)


def test_invariant_features_are_what_the_cluster_head_reads(tmp_path):
    config = guided_config(tmp_path / "run")
    config["group"] = {"type": "se2", "angle_deg": [-90, 90], "shift": 0.2}
    config["data"]["transform"] = {"group": "se2", "angle_deg": [-90, 90], "shift": 0.2, "seed": 0}
    for options in ({"prealign": True}, {"canonicalize": True}, {}):
        config["model"] = {"z_cluster_dim": 3, "z_style_dim": 1, "canonicalize": False, **options}
        _, data, model = small_model(config)
        model.eval()
        x = data.as_tensors()["image"][:6]
        expected = model.encode(x).z_cluster.mean
        assert torch.allclose(model.cluster_head(model.invariant_features(x)).mean, expected, atol=1e-6), options


def test_a_refined_run_learns_the_refined_labels_and_keeps_them_on_resume(tmp_path):
    config = guided_config(tmp_path / "run", epochs=1)
    config["graph"].update(confident_fraction=0.7, refine_epochs=2)
    trainer = Trainer(config, console=False)
    trainer.run()
    guide = trainer.loss_module.guide
    assert bool(guide.confident.all())  # every refined label is trusted
    assert len(guide.labels) == len(trainer.graph.labels)
    log = (tmp_path / "run" / "train.log").read_text()
    assert "refined labels:" in log
    # the same seed refines to the same labels
    again = Trainer({**config, "training": {**config["training"], "out_dir": str(tmp_path / "again")}}, console=False)
    again.run()
    assert torch.equal(again.loss_module.guide.labels, guide.labels)
    resumed = Trainer({**config, "training": {**config["training"], "epochs": 2}}, resume=True, console=False)
    resumed.run()
    assert "refining" not in (tmp_path / "run" / "train.log").read_text().split("resumed from")[-1]
    parsed = validate_config(config)
    assert len(build("data", parsed.data, split="train")) == len(resumed.loss_module.guide.labels)


def test_refine_epochs_must_not_be_negative(tmp_path):
    config = guided_config(tmp_path / "run")
    config["graph"]["refine_epochs"] = -1
    with pytest.raises(Exception, match="refine_epochs"):
        validate_config(config)


def test_propagation_lets_an_unsure_image_follow_its_neighbours_and_keeps_sure_ones():
    from mcvae_framework.train.refinement import propagate

    p = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.45, 0.55], [0.1, 0.9]])
    neighbours = torch.tensor([[1, 2], [0, 2], [0, 1], [2, 2]])
    q = propagate(p, neighbours, 10)
    assert torch.allclose(q.sum(-1), torch.ones(4))
    assert q[2].argmax() == 0  # the unsure image joins its two sure neighbours
    assert q[3].argmax() == 1  # a sure image keeps at least half its own say
    assert torch.equal(propagate(p, neighbours, 0), p)

