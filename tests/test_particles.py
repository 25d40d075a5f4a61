"""configs/templates/particles.yaml, the ready start for a cryo-EM particle stack: a template that
validates once its stack is named, trains a tiny stack end to end with the noise level read
from the data, and the noise estimator it relies on."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mcvae_framework import load_config
from mcvae_framework.model.likelihood import MIN_NOISE_STD, estimate_noise_std, reconstruction_nll
from mcvae_framework.report.evaluation import evaluate_run
from mcvae_framework.train.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "configs" / "templates" / "particles.yaml"


def tiny_stack(path: Path, n: int = 48, side: int = 40, noise: float = 0.5, seed: int = 0) -> np.ndarray:
    """Two blob shapes (a bar, an L) turned at random, with white noise; written as an MRC stack."""
    import mrcfile

    rng = np.random.default_rng(seed)
    ys, xs = np.meshgrid(np.linspace(-1, 1, side), np.linspace(-1, 1, side), indexing="ij")
    images, labels = [], []
    for i in range(n):
        angle = rng.uniform(-math.pi, math.pi)
        u, v = math.cos(angle) * xs + math.sin(angle) * ys, -math.sin(angle) * xs + math.cos(angle) * ys
        bar = (np.abs(u) < 0.15) & (np.abs(v) < 0.6)
        ell = bar | ((np.abs(v - 0.45) < 0.15) & (u > 0) & (u < 0.5))
        label = i % 2
        images.append((ell if label else bar).astype(np.float32) + rng.normal(0, noise, (side, side)))
        labels.append(label)
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.stack(images).astype(np.float32))
        mrc.set_image_stack()
    np.save(path.with_suffix(".labels.npy"), np.asarray(labels))
    return np.asarray(labels)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "mcvae_framework.cli", *args], capture_output=True, text=True)


def test_the_template_names_a_stack_the_user_supplies():
    assert TEMPLATE.read_text().startswith("# template:")
    result = run_cli("config", "validate", str(TEMPLATE))
    assert result.returncode == 2 and "data.path" in result.stderr and "Traceback" not in result.stderr


def test_the_template_validates_once_its_stack_is_named(tmp_path):
    tiny_stack(tmp_path / "stack.mrcs")
    result = run_cli("config", "validate", str(TEMPLATE), "--set", f"data.path={tmp_path / 'stack.mrcs'}",
                     "--set", "prior.n_components=2")
    assert result.returncode == 0, result.stderr
    config = load_config(TEMPLATE, [f"data.path={tmp_path / 'stack.mrcs'}"])
    assert config.loss.likelihood == "gaussian" and config.loss.gaussian_std == "auto"
    assert tuple(config.group.angle_deg) == (-180, 180) and config.graph.enabled


def test_a_tiny_stack_trains_end_to_end_with_its_noise_level_read_from_the_data(tmp_path):
    stack = tmp_path / "stack.mrcs"
    tiny_stack(stack)
    config = load_config(TEMPLATE, [f"data.path={stack}", f"data.labels={stack.with_suffix('.labels.npy')}",
                                    "prior.n_components=2", "loss.pretrain_epochs=1", "training.epochs=1",
                                    "training.min_steps_per_epoch=2", "training.batch_size=16",
                                    f"training.out_dir={tmp_path / 'run'}", "training.device=cpu",
                                    "training.progress=false", "encoder.channels=[8, 16]"])
    run = Trainer(config, console=False).run()
    checkpoint = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    noise = float(checkpoint["model"]["noise_std"])
    assert MIN_NOISE_STD < noise < 1.0  # standardised to [0, 1] with clipping: the noise is a part of that
    log = (run / "train.log").read_text()
    assert "noise level" in log and "invariant graph:" in log and "agrees with the graph" in log
    report = evaluate_run(run)
    assert report["graph"]["features"] == "pixels" and report["graph"]["search_poses"] == 36
    assert [c["features"] for c in report["graph"]["candidates"]] == ["pixels", "pixels"]
    assert report["graph"]["model_checks"]["checks"]
    # the test images are nodes of the transductive run's graph: the consensus reading is reported
    assert report["consensus"]["neighbours"] == report["graph"]["neighbours"]
    assert 0.0 <= report["consensus"]["accuracy"] <= 1.0
    json.dumps(report["graph"])  # what report.json holds


@pytest.mark.parametrize("sigma", [0.05, 0.2, 1.0])
def test_the_noise_estimate_finds_white_noise_under_smooth_content(sigma):
    generator = torch.Generator().manual_seed(0)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    smooth = torch.exp(-(xs ** 2 + ys ** 2) * 4).expand(32, 1, 64, 64)
    noisy = smooth + sigma * torch.randn(smooth.shape, generator=generator)
    assert estimate_noise_std(noisy) == pytest.approx(sigma, rel=0.05)
    assert estimate_noise_std(smooth) == MIN_NOISE_STD  # no noise: the floor


def test_the_gaussian_likelihood_uses_the_estimated_level_when_auto():
    class Loss:
        likelihood, gaussian_std = "gaussian", "auto"

    x, mean = torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4)
    nll = reconstruction_nll(mean, x, Loss, torch.tensor(0.5))
    expected = 16 * (0.5 * (1 / 0.5) ** 2 + math.log(0.5 * math.sqrt(2 * math.pi)))
    assert torch.allclose(nll, torch.full((2,), expected))
