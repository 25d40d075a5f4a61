"""The trainer: optimisation works, runs are reproducible, resume is exact, failures are clean.

Every run here is tiny (a hundred 8x8 digits, small MLPs, 1-3 epochs) so the file stays fast.
"""

from __future__ import annotations

import csv
import json

import pytest
import torch
from click.testing import CliRunner

from mcvae_framework import CheckpointError, RunFolderError, TrainingError, build, validate_config
from mcvae_framework.runtime.distributed import DistributedContext
from mcvae_framework.runtime.run_layout import RunLayout
from mcvae_framework.train.run_folder import RunFolder
from mcvae_framework.runtime.checkpoint import load_checkpoint
from mcvae_framework.cli import cli
from mcvae_framework.train.epochs import EpochRunner
from mcvae_framework.interfaces import ImageDataset
from mcvae_framework.model.losses import LossModule
from mcvae_framework.model.mcevae import build_model
from mcvae_framework.train.trainer import (
    Trainer,
    TrainingInterrupted,
    load_trained_model,
    make_optimizer,
    train,
)


def tiny_config(out_dir, *, epochs=2, pretrain_epochs=0, **training) -> dict:
    """An unsupervised SO(2) MCE-VAE on 96 scikit-learn digits: seconds per run."""
    return {
        "data": {"type": "digits", "limit": 96},
        "group": {"type": "so2", "angle_deg": [-90, 90]},
        "encoder": {"type": "mlp", "hidden": [32, 16]},
        "decoder": {"type": "mlp", "hidden": [16, 32]},
        "prior": {"type": "gmm", "n_components": 3},
        "model": {"z_cluster_dim": 2, "z_style_dim": 1},
        "loss": {"mode": "unsupervised", "n_augment": 2, "pretrain_epochs": pretrain_epochs},
        "training": {"epochs": epochs, "batch_size": 32, "device": "cpu", "seed": 3, "progress": False,
                     "out_dir": str(out_dir), **training},
    }


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def parameters(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def fixed_batch(config):
    data = build("data", config.data, split="train")
    return data, {"image": data.as_tensors()["image"][:32]}


class InMemory(ImageDataset):
    """A dataset from stacked tensors (used to feed the trainer corrupted data)."""

    def __init__(self, tensors: dict[str, torch.Tensor], like):
        self.tensors = tensors
        self.image_shape, self.n_classes, self.split = like.image_shape, like.n_classes, like.split

    def __len__(self):
        return len(self.tensors["image"])

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.tensors.items()}

    def as_tensors(self):
        return dict(self.tensors)


# ------------------------------------------------------------------ optimisation


def test_one_step_lowers_the_loss_on_a_fixed_batch(tmp_path):
    config = validate_config(tiny_config(tmp_path))
    data, batch = fixed_batch(config)
    torch.manual_seed(0)
    module = LossModule(build_model(config, image_shape=data.image_shape), config.loss)
    optimizer = make_optimizer(module.parameters(), config.training)

    def loss() -> torch.Tensor:  # the same noise every time: only the parameters change
        return module(batch, generator=torch.Generator().manual_seed(7))["loss"]

    before = loss()
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = loss()
    assert torch.isfinite(before) and after < before


def test_gradients_reach_every_head_the_networks_and_the_prior(tmp_path):
    config = validate_config(tiny_config(tmp_path))
    data, batch = fixed_batch(config)
    torch.manual_seed(0)
    model = build_model(config, image_shape=data.image_shape)
    LossModule(model, config.loss)(batch, generator=torch.Generator().manual_seed(1))["loss"].backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reaches {missing}"
    groups = {name.split(".")[0] for name, _ in model.named_parameters()}
    assert {"encoder", "decoder", "prior", "cluster_head", "style_head", "pose_head"} <= groups


# ------------------------------------------------------------------ reproducibility and resume


def test_two_runs_with_the_same_seed_give_identical_losses(tmp_path):
    first = Trainer(tiny_config(tmp_path / "a", epochs=1), console=False)
    second = Trainer(tiny_config(tmp_path / "b", epochs=1), console=False)
    first.run(), second.run()
    losses = [[row["train_loss"], row["test_loss"]] for row in first.history]
    assert losses == [[row["train_loss"], row["test_loss"]] for row in second.history]
    for name, value in parameters(first.model).items():
        assert torch.equal(value, parameters(second.model)[name]), name


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path, monkeypatch):
    # pretraining, the prior fit, a cosine schedule and gradient clipping all cross the break
    options = dict(epochs=2, pretrain_epochs=1, scheduler="cosine", grad_clip=5.0)
    whole = Trainer(tiny_config(tmp_path / "whole", **options), console=False)
    whole.run()

    broken_config = tiny_config(tmp_path / "broken", **options)
    real_check = EpochRunner.finite_values

    def interrupt_in_the_last_epoch(self, terms, names, epoch, step, steps, batch):
        if epoch == 2 and step == 2:
            raise KeyboardInterrupt
        return real_check(self, terms, names, epoch, step, steps, batch)

    monkeypatch.setattr(EpochRunner, "finite_values", interrupt_in_the_last_epoch)
    with pytest.raises(TrainingInterrupted, match=r"epoch 3.*last finished epoch \(2\).*--resume") as info:
        Trainer(broken_config, console=False).run()
    assert info.value.exit_code == 130
    checkpoint_path = tmp_path / "broken" / "checkpoints" / "last.pt"
    assert load_checkpoint(checkpoint_path)["epoch"] == 2
    assert len(list(csv.DictReader((tmp_path / "broken" / "metrics.csv").open()))) == 2

    monkeypatch.setattr(EpochRunner, "finite_values", real_check)
    resumed = Trainer(broken_config, resume=True, console=False)
    resumed.run()
    for name, value in parameters(whole.model).items():
        torch.testing.assert_close(parameters(resumed.model)[name], value, rtol=1e-6, atol=1e-7, msg=name)
    assert [r["train_loss"] for r in resumed.history] == pytest.approx([r["train_loss"] for r in whole.history])
    assert len(list(csv.DictReader((tmp_path / "broken" / "metrics.csv").open()))) == 3


# ------------------------------------------------------------------ failures


def test_nan_in_the_data_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    config = tiny_config(tmp_path, epochs=1)
    train(config, console=False)
    checkpoint_path = tmp_path / "checkpoints" / "last.pt"
    good_bytes = checkpoint_path.read_bytes()

    clean = build("data", validate_config(config).data, split="train")
    tensors = clean.as_tensors()
    images = tensors["image"].clone()
    images[5, 0, 3, 4] = float("nan")
    poisoned = InMemory({**tensors, "image": images}, like=clean)

    config["training"]["epochs"] = 2
    # the message names the epoch, the step and what is non-finite (a term, or the input itself)
    with pytest.raises(TrainingError, match=r"non-finite .*epoch 2 of 2, step \d+ of 3.*input 'image'") as info:
        Trainer(config, resume=True, train_dataset=poisoned, console=False).run()
    assert str(checkpoint_path) in str(info.value)
    assert "ERROR training stopped: non-finite" in (tmp_path / "train.log").read_text()
    assert checkpoint_path.read_bytes() == good_bytes
    assert load_checkpoint(checkpoint_path)["epoch"] == 1
    kept = ("last.pt", "previous.pt", "best.pt")
    assert not [p for p in checkpoint_path.parent.iterdir() if p.name not in kept]  # no stray temp file


def test_a_truncated_checkpoint_is_refused_and_resume_goes_on_from_the_previous_one(tmp_path):
    config = tiny_config(tmp_path, epochs=2, eval_every=0)
    train(config, console=False)
    layout = RunLayout(tmp_path)
    assert load_checkpoint(layout.previous)["epoch"] == 1  # the checkpoint last.pt replaced
    assert load_checkpoint(layout.last)["epoch"] == 2
    layout.last.write_bytes(layout.last.read_bytes()[:3000])
    with pytest.raises(CheckpointError, match="truncated") as info:
        load_trained_model(tmp_path)
    message = str(info.value)
    assert info.value.exit_code == 2 and str(layout.last) in message
    assert str(layout.previous) in message and "--resume" in message
    resumed = Trainer(config, resume=True, console=False)
    resumed.run()
    assert "resuming from the previous checkpoint" in layout.log.read_text()
    assert [row["epoch"] for row in resumed.history] == [1, 2]
    assert load_checkpoint(layout.last)["epoch"] == 2
    assert len(list(csv.DictReader(layout.metrics.open()))) == 2
    load_trained_model(tmp_path)  # whole again


def test_the_damaged_last_checkpoint_never_replaces_the_previous_one(tmp_path):
    config = tiny_config(tmp_path, epochs=1, eval_every=0)
    train(config, console=False)
    layout = RunLayout(tmp_path)
    layout.last.write_bytes(b"damaged")
    previous = layout.previous.read_bytes()
    config["training"]["epochs"] = 2
    folder = RunFolder(tmp_path, DistributedContext.from_env(), validate_config(config).training)
    checkpoint, path = folder.read_resume_checkpoint(json.loads(layout.config.read_text()), (1, 8, 8))
    assert path == layout.previous and checkpoint["epoch"] == 0
    folder.write_checkpoint({**checkpoint, "epoch": 1})
    assert layout.previous.read_bytes() == previous  # the damaged file was overwritten, not kept
    assert load_checkpoint(layout.last)["epoch"] == 1


def test_resume_refuses_when_both_checkpoints_are_damaged(tmp_path):
    config = tiny_config(tmp_path, epochs=1, eval_every=0)
    train(config, console=False)
    layout = RunLayout(tmp_path)
    layout.last.write_bytes(b"")
    layout.previous.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="previous checkpoint .* cannot be used either") as info:
        Trainer(config, resume=True, console=False).run()
    assert str(layout.last) in str(info.value) and str(layout.previous) in str(info.value)


def test_resuming_with_a_different_model_is_refused(tmp_path):
    config = tiny_config(tmp_path, epochs=1, eval_every=0)
    train(config, console=False)
    config["model"]["z_cluster_dim"] = 4
    with pytest.raises(RunFolderError, match=r"another model.*model\.z_cluster_dim: checkpoint 2, config 4"):
        Trainer(config, resume=True, console=False).run()


def test_an_existing_run_is_neither_overwritten_nor_resumed_silently(tmp_path):
    config = tiny_config(tmp_path, epochs=1, eval_every=0)
    with pytest.raises(RunFolderError, match="holds no checkpoint"):
        Trainer(config, resume=True, console=False).run()
    train(config, console=False)
    with pytest.raises(RunFolderError, match="already holds a run.*--resume.*--overwrite"):
        train(config, console=False)
    train(config, overwrite=True, console=False)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["epoch"] == 1


# ------------------------------------------------------------------ the command


def test_mcvae_train_writes_the_run_folder(tmp_path, monkeypatch):
    config_file = tmp_path / "tiny.json"
    config_file.write_text(json.dumps(tiny_config("ignored", epochs=1, pretrain_epochs=1, checkpoint_every=1)))
    run_dir = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(cli, ["train", str(config_file), "--out-dir", str(run_dir), "--set", "training.seed=5"])
    assert result.exit_code == 0, result.output
    assert f"run folder: {run_dir}" in result.output

    resolved = json.loads((run_dir / "config.json").read_text())
    assert resolved["training"]["out_dir"] == str(run_dir) and resolved["training"]["seed"] == 5
    assert resolved["training"]["lr"] == 1e-3  # defaults filled in
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"] and [r["phase"] for r in rows] == ["pretrain", "train"]
    for column in ("seconds", "images_per_second", "train_loss", "train_reconstruction", "train_cluster_kl",
                   "test_loss", "test_invariance"):
        assert column in rows[0], column
    assert float(rows[1]["images_per_second"]) > 0 and rows[1]["train_cluster_kl"] != ""
    assert "epoch 2/2 (train)" in (run_dir / "train.log").read_text()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.pt", "epoch_0001.pt", "epoch_0002.pt", "last.pt",
                                                                          "previous.pt"]
    checkpoint = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["epoch"] == 2 and set(checkpoint["versions"]) >= {"torch", "numpy", "python"}

    config, model = load_trained_model(run_dir)
    assert config.training.seed == 5 and not model.training
    assert model.predict(torch.rand(4, 1, 8, 8))["cluster"].shape == (4,)

    again = runner.invoke(cli, ["train", str(config_file), "--out-dir", str(run_dir), "--set", "training.seed=5",
                                "--resume"])
    assert again.exit_code == 0 and "run folder" in again.output

    def interrupt(self, *args):
        raise KeyboardInterrupt

    monkeypatch.setattr(EpochRunner, "finite_values", interrupt)
    stopped = runner.invoke(cli, ["train", str(config_file), "--out-dir", str(tmp_path / "stopped")])
    assert stopped.exit_code == 130
    assert "interrupted" in stopped.output and "--resume" in stopped.output
