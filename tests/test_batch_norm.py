"""Batch-norm statistics recomputed from plain images after every epoch (train/batch_norm):
evaluation then normalises an image as a plain training pass did, and no random number is drawn."""

from __future__ import annotations

import pytest
import torch

from mcvae_framework.train.batch_norm import recalibrate_batch_norm
from mcvae_framework.train.batching import sample_indices
from mcvae_framework.train.trainer import Trainer
from test_guidance import guided_config, small_model

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def norms(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def test_evaluation_normalises_plain_images_as_a_plain_training_pass_does(tmp_path):
    config, data, model = small_model(guided_config(tmp_path / "run"))
    images = data.as_tensors()["image"][:160]
    assert norms(model)  # the conv encoder has batch norm
    model.train()
    with torch.no_grad():
        for _ in range(20):  # passes unlike the plain images (as the moved copies are) fill the running averages
            model(3 * images[:32] + 1, sample=False)
        in_training = model.encode(images).z_cluster.mean  # normalised by the batch's own statistics
    model.eval()
    before = model.encode(images).z_cluster.mean
    assert (before - in_training).abs().max() > 0.1
    momenta = [m.momentum for m in norms(model)]
    rng = torch.random.get_rng_state()
    recalibrate_batch_norm(model, images, "cpu", batch_size=160)
    assert torch.equal(torch.random.get_rng_state(), rng)  # a resumed run stays exact
    assert not model.training and [m.momentum for m in norms(model)] == momenta
    after = model.encode(images).z_cluster.mean
    # the running variance is the unbiased one of the pass: equal up to 160/159
    assert torch.allclose(after, in_training, atol=2e-2, rtol=2e-2)


def test_the_sample_is_fixed_and_covers_small_sets():
    def seeded():
        return torch.Generator().manual_seed(3)

    assert torch.equal(sample_indices(50, 1024, seeded()), torch.arange(50))
    pick = sample_indices(5000, 1024, seeded())
    assert len(pick) == 1024 == len(set(pick.tolist())) and torch.equal(pick, sample_indices(5000, 1024, seeded()))
    assert bool((pick[1:] > pick[:-1]).all())


def test_a_run_recomputes_the_statistics_after_every_epoch_unless_told_not_to(tmp_path, monkeypatch):
    import mcvae_framework.train.batch_norm as batch_norm

    calls = []
    real = batch_norm.recalibrate_batch_norm
    monkeypatch.setattr(batch_norm, "recalibrate_batch_norm", lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    Trainer(guided_config(tmp_path / "run", epochs=2), console=False).run()
    assert calls == [180, 180, 180]  # 1 pretraining + 2 epochs, every training image (fewer than 1024)
    calls.clear()
    config = guided_config(tmp_path / "off", epochs=2)
    config["training"]["batch_norm_images"] = 0
    Trainer(config, console=False).run()
    assert calls == []
