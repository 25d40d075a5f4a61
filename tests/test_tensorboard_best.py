"""`training.tensorboard: true` writes event files with every loss term, images/s and a
reconstruction grid; `checkpoints/best.pt` is the ELBO epoch with the lowest
`training.best_metric`; the log's first lines say how many epochs of each phase run."""

from __future__ import annotations

import csv

import pytest
import torch

from mcvae_framework.train.trainer import Trainer, load_trained_model

CONFIG = {
    "data": {"type": "digits", "limit": 64, "transform": {"group": "so2", "seed": 0, "canvas": 8}},
    "group": {"type": "so2"},
    "encoder": {"type": "mlp"},
    "decoder": {"type": "mlp"},
    "prior": {"type": "gmm", "n_components": 2},
    "model": {"z_cluster_dim": 2, "z_style_dim": 1},
    "loss": {"mode": "unsupervised", "n_augment": 1, "pretrain_epochs": 1},
    "training": {"epochs": 3, "batch_size": 32, "device": "cpu", "progress": False, "tensorboard": True},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    pytest.importorskip("tensorboard")
    out = tmp_path_factory.mktemp("tb")
    trainer = Trainer(CONFIG, out_dir=out, console=False)
    trainer.run()
    return out, trainer


def test_event_files_hold_every_loss_term_speed_and_images(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = run
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    with open(out / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    terms = {key.split("_", 1)[1] for key in rows[-1] if key.startswith(("train_", "test_")) and rows[-1][key]}
    assert {"loss", "reconstruction"} <= terms
    for term in terms:
        assert f"{term}/train" in tags or f"{term}/test" in tags, f"{term} is not in the event file"
    assert {"speed/images_per_second", "optimizer/lr"} <= tags
    loss = acc.Scalars("loss/train")
    assert [e.step for e in loss] == [1, 2, 3, 4]  # every epoch, pretraining included
    assert [e.value for e in loss] == pytest.approx([float(r["train_loss"]) for r in rows], rel=1e-5)
    images = acc.Images(acc.Tags()["images"][0])
    assert len(images) == 4 and images[-1].width > images[-1].height > 8  # 3 rows of 8 images


def test_best_checkpoint_is_the_elbo_epoch_with_the_lowest_test_loss(run):
    out, trainer = run
    rows = [r for r in trainer.history if r["phase"] == "train"]
    best = min(rows, key=lambda r: r["test_loss"])
    saved = torch.load(out / "checkpoints" / "best.pt", weights_only=True)
    assert saved["epoch"] == best["epoch"]
    _, model = load_trained_model(out / "checkpoints" / "best.pt")
    assert model is not None


def test_the_first_lines_say_pretraining_plus_training_epochs(run):
    out, _ = run
    log = (out / "train.log").read_text()
    assert "1 pretraining + 3 training epochs (4 in all" in log
    assert log.count(str(out)) == 1  # the run folder is named once


def test_best_metric_must_name_a_metrics_column(tmp_path):
    from mcvae_framework.errors import ConfigError
    from mcvae_framework.config.experiment import validate_config

    with pytest.raises(ConfigError, match="training.best_metric"):
        validate_config({**CONFIG, "training": {**CONFIG["training"], "best_metric": "loss"}})
    config = {**CONFIG, "training": {**CONFIG["training"], "tensorboard": False, "epochs": 1,
                                     "best_metric": "test_lost"}}
    Trainer(config, out_dir=tmp_path, console=False).run()
    assert "'test_lost' is not a column of metrics.csv" in (tmp_path / "train.log").read_text()
    assert not (tmp_path / "checkpoints" / "best.pt").exists()
