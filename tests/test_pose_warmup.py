"""Teaching the pose head the graph's poses before the VAE trains (graph.pose_warmup_steps)."""

from __future__ import annotations

import pytest
import torch

from mcvae_framework.model.guide import Guide
from mcvae_framework.model.losses import pose_guide_term
from mcvae_framework.train.pose_warmup import WINDOW, warm_up_pose
from mcvae_framework.train.trainer import Trainer

from test_guidance import guided_config, small_model

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def _turned_digits(tmp_path):
    """A small model and 200 digits turned within +-90 degrees, with their true angles (the
    guide's shapes would not do: a plus or a triangle has no single angle)."""
    config = guided_config(tmp_path / "run")
    config["data"] = {"type": "digits", "limit": 200, "transform": {"group": "so2", "angle_deg": [-90, 90], "seed": 0}}
    config["group"] = {"type": "so2", "angle_deg": [-90, 90]}
    config["prior"]["n_components"] = 10
    config, data, model = small_model(config)
    tensors = data.as_tensors()
    angle = model.group.angle_coordinates[0]
    return model, tensors["image"], tensors["pose"][:, angle], tensors["label"]


def test_the_warm_up_teaches_the_pose_head_the_guides_angles(tmp_path):
    model, images, angles, labels = _turned_digits(tmp_path)
    guide = Guide(labels=labels, confident=torch.ones(len(labels), dtype=torch.bool), angles=angles,
                  angle_clusters=labels)
    everything = torch.arange(len(images))
    with torch.no_grad():
        before = float(pose_guide_term(model, model.encode(images), guide, everything))
    done = warm_up_pose(model, images, guide, steps=300, batch_size=16, lr=3e-3, stop_below=0.0,
                        generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        after = float(pose_guide_term(model, model.encode(images), guide, everything))
    assert done.steps == 300 and done.seconds > 0
    assert after < 0.1 * before, (before, after)  # each digit's angles learned up to its class's offset
    assert done.last < done.first
    assert all(p.grad is None for p in model.parameters())  # the run's optimiser starts clean


def test_the_warm_up_stops_once_the_term_is_below_its_threshold(tmp_path):
    model, images, _, labels = _turned_digits(tmp_path)
    # every image already at its cluster's frame: the head starts at the identity, and the
    # guide's angles are all 0, so the term is 0 from the first step
    guide = Guide(labels=labels, confident=torch.ones(len(labels), dtype=torch.bool),
                  angles=torch.zeros(len(labels)), angle_clusters=labels)
    done = warm_up_pose(model, images, guide, steps=1000, batch_size=16, lr=1e-12,
                        generator=torch.Generator().manual_seed(0))
    assert done.steps == WINDOW and done.last < 0.02


def test_the_warm_up_refuses_a_guide_without_poses_or_trusted_images(tmp_path):
    model, images, angles, labels = _turned_digits(tmp_path)
    with pytest.raises(ValueError, match="angles or poses"):
        warm_up_pose(model, images, Guide(labels=labels, confident=torch.ones_like(labels, dtype=torch.bool)),
                     steps=5, batch_size=4, lr=1e-3)
    with pytest.raises(ValueError, match="confident_fraction"):
        warm_up_pose(model, images, Guide(labels=labels, confident=torch.zeros_like(labels, dtype=torch.bool),
                                          angles=angles, angle_clusters=labels), steps=5, batch_size=4, lr=1e-3)


def test_a_run_warms_the_pose_up_once_deterministically_and_not_again_on_resume(tmp_path):
    config = guided_config(tmp_path / "run", epochs=1, pose_guide_weight=5.0)
    config["graph"]["pose_warmup_steps"] = 30
    trainer = Trainer(config, console=False)
    trainer.run()
    log = (tmp_path / "run" / "train.log").read_text()
    assert log.count("pose warm-up:") == 1 and "for 30 steps (of at most 30)" in log
    again = Trainer({**config, "training": {**config["training"], "out_dir": str(tmp_path / "again")}}, console=False)
    again.run()
    for mine, theirs in zip(trainer.model.parameters(), again.model.parameters()):
        assert torch.equal(mine, theirs)
    Trainer({**config, "training": {**config["training"], "epochs": 2}}, resume=True, console=False).run()
    assert (tmp_path / "run" / "train.log").read_text().count("pose warm-up:") == 1


def test_a_warm_up_without_rotations_to_learn_is_refused_by_name(tmp_path, monkeypatch):
    from dataclasses import replace

    from mcvae_framework import TrainingError
    from mcvae_framework.train import graph_build  # the trainer's graph is built there

    real = graph_build.invariant_graph_clusters
    monkeypatch.setattr(graph_build, "invariant_graph_clusters",
                        lambda *args, **kwargs: replace(real(*args, **kwargs), angles=None))
    config = guided_config(tmp_path / "run", epochs=1)
    config["graph"]["pose_warmup_steps"] = 10
    with pytest.raises(TrainingError, match=r"pose_warmup_steps > 0 .* no rotation .* graph.pose_warmup_steps: 0"):
        Trainer(config, console=False).run()
