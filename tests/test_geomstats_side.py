"""The groups' geomstats side: the guarded import, evaluation's geomstats path on a
trained run, predicted poses as geomstats points with the documented example, geomstats
off the training path, and the ``affine2`` ready config training and evaluating."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mcvae_framework import build, geomstats_bridge

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "geomstats-poses" / "poses_with_geomstats.py"

# scikit-learn's 8x8 digits on a 12x12 canvas, moved by SE(2): one epoch in seconds.
SE2_CONFIG = {
    "data": {"type": "digits", "limit": 90,
             "transform": {"group": "se2", "angle_deg": [-90, 90], "shift": 0.1, "seed": 0, "canvas": 12}},
    "group": {"type": "se2", "angle_deg": [-90, 90], "shift": 0.1},
    "encoder": {"type": "mlp", "hidden": [32]},
    "decoder": {"type": "mlp", "hidden": [32]},
    "prior": {"type": "gmm", "n_components": 3},
    "model": {"z_cluster_dim": 3, "z_style_dim": 2},
    "loss": {"mode": "unsupervised", "n_augment": 1},
    "training": {"epochs": 1, "batch_size": 32, "device": "cpu", "seed": 0},
}


def _train(config, out):
    from mcvae_framework.train.trainer import Trainer

    Trainer(config, out_dir=out, console=False, overwrite=True).run()
    return out


@pytest.fixture(scope="module")
def se2_run(tmp_path_factory):
    return _train(SE2_CONFIG, tmp_path_factory.mktemp("se2-run"))


def test_import_keeps_torch_default_dtype_in_a_fresh_process():
    code = (
        "import torch\n"
        "from mcvae_framework import geomstats_bridge as b\n"
        "m = b.import_geomstats()\n"
        "assert torch.get_default_dtype() == torch.float32, torch.get_default_dtype()\n"
        "assert m.backend == 'pytorch'\n"
        "from mcvae_framework import build\n"
        "space = b.geomstats_space_of(build('group', {'type': 'so2'}))\n"
        "assert torch.get_default_dtype() == torch.float32\n"
        "assert torch.zeros(1).dtype == torch.float32\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "GEOMSTATS_BACKEND"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr


def test_training_and_the_groups_never_import_geomstats(tmp_path):
    # the hot path: building a model, a training step, exp/log/act of every group
    code = (
        "import sys, torch, yaml\n"
        "from mcvae_framework.train.trainer import Trainer\n"
        f"config = yaml.safe_load({yaml.safe_dump(SE2_CONFIG)!r})\n"
        "config['data']['limit'] = 40\n"
        f"Trainer(config, out_dir={str(tmp_path / 'run')!r}, console=False, overwrite=True).run()\n"
        "from mcvae_framework import build\n"
        "for tag in ('so2', 'se2', 'scale_rotation', 'sim2', 'affine2'):\n"
        "    g = build('group', {'type': tag}); g.log(g.exp(g.sample(4))); g.act(torch.rand(4, 1, 8, 8), g.exp(g.sample(4)))\n"
        "assert 'geomstats' not in sys.modules, 'geomstats was imported on the training path'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def test_evaluate_uses_geomstats_for_se2_and_agrees_with_the_hand_written_path(se2_run):
    from mcvae_framework.report.evaluation import evaluate_run

    by = {path: evaluate_run(se2_run, n_actions=1, pose_mean=path)["pose"] for path in ("intrinsic", "auto")}
    report = json.loads((se2_run / "report.json").read_text())  # the last one written: auto
    assert report["pose"]["offset_mean"]["path"] == "geomstats"
    assert "SpecialEuclidean(2)" in report["pose"]["offset_mean"]["method"]
    assert by["intrinsic"]["offset_mean"]["path"] == "intrinsic"
    for block, key in (("per_cluster_offset", "rotation_deg"), ("per_cluster_offset_mod180", "rotation_deg_mod180")):
        a, b = by["auto"][block][key]["median"], by["intrinsic"][block][key]["median"]
        assert abs(a - b) <= 0.1, (block, a, b)
    assert "Offsets averaged by: geomstats FrechetMean" in (se2_run / "report.md").read_text()


def test_predicted_poses_are_geomstats_points_and_the_example_runs(se2_run, tmp_path):
    from mcvae_framework.report.prediction import predict_run

    out = predict_run(se2_run, _config_file(tmp_path), tmp_path / "pred.npz")
    saved = np.load(out)
    n = len(saved["cluster"])
    assert saved["pose_matrix"].shape == (n, 3, 3) and saved["pose_geomstats"].shape == (n, 3, 3)
    assert str(saved["pose_group"]) == "se2"
    group = build("group", {"type": "se2"})
    expected = group.exp(torch.as_tensor(saved["tau"]).double()).numpy()
    assert np.abs(saved["pose_matrix"] - expected).max() < 1e-6
    space = geomstats_bridge.geomstats_space_of(group)
    with geomstats_bridge.float64_scope():
        belongs = geomstats_bridge.to_torch(space.belongs(geomstats_bridge.to_backend(saved["pose_geomstats"])))
    assert bool(belongs.all())
    # the documented example, as a user runs it: its own process, geomstats' numpy backend
    env = {**os.environ, "GEOMSTATS_BACKEND": "numpy"}
    result = subprocess.run([sys.executable, str(EXAMPLE), str(out), "--k-means", "2", "--max-points", "40"],
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["space"] == "SpecialEuclidean(2)" and summary["n_poses"] == n
    clusters = summary["clusters"]
    assert sum(c["n"] for c in clusters.values()) == n
    assert all(c["in_space"] and c["dispersion"] >= 0 for c in clusters.values())
    assert sum(summary["k_means"]["sizes"]) == min(n, 40)


def _config_file(tmp_path):
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(SE2_CONFIG))
    return path


def test_the_affine_ready_config_trains_and_evaluates(tmp_path):
    from mcvae_framework.report.evaluation import evaluate_run

    config = yaml.safe_load((ROOT / "configs" / "affine_mnist.yaml").read_text())
    assert config["group"]["type"] == "affine2" and config["data"]["transform"]["group"] == "affine2"
    # the same experiment, small: 60 digits, one epoch, one moved copy per image
    config["data"]["limit"] = 60
    config["loss"].update(n_augment=1, pretrain_epochs=0)
    config["training"].update(epochs=1, batch_size=30, device="cpu")
    run = _train(config, tmp_path / "affine-run")
    report = evaluate_run(run, n_actions=1)
    pose = report["pose"]
    assert set(pose["per_cluster_offset"]) == {"rotation_deg", "rotation_deg_mod180", "translation", "log_scale", "stretch"}
    assert pose["offset_mean"]["method"] == (
        "geomstats ExponentialBarycenter (group exponential barycenter) on GeneralLinear+(3)")
    assert np.isfinite(report["reconstruction"]["mse"]) and "invariance" in report


def test_evaluate_command_picks_the_pose_mean_and_refuses_geomstats_where_it_cannot_serve(se2_run, tmp_path,
                                                                                           monkeypatch):
    import shutil

    from click.testing import CliRunner

    from mcvae_framework.cli import cli

    run = tmp_path / "run"
    shutil.copytree(se2_run, run)  # report.json is written into the run: leave the fixture's alone
    result = CliRunner().invoke(cli, ["evaluate", str(run), "--n-actions", "1", "--pose-mean", "intrinsic"])
    assert result.exit_code == 0, result.output
    how = json.loads((run / "report.json").read_text())["pose"]["offset_mean"]
    assert how["path"] == "intrinsic" and how["method"].startswith("hand-written intrinsic mean")
    assert "Offsets averaged by: hand-written" in result.output
    # a group that names no geomstats space (here: se2 with its space hidden) cannot be
    # averaged by geomstats: one message naming the group and the way out, exit code 2
    monkeypatch.setattr(geomstats_bridge, "has_geomstats_space", lambda group: False)
    result = CliRunner().invoke(cli, ["evaluate", str(run), "--n-actions", "1", "--pose-mean", "geomstats"])
    assert result.exit_code == 2, result.output
    assert "pose_mean: 'geomstats' cannot serve the group se2: the group names no geomstats space" in result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, ValueError)
    bad = CliRunner().invoke(cli, ["evaluate", str(run), "--pose-mean", "karcher"])
    assert bad.exit_code == 2 and "auto" in bad.output and "intrinsic" in bad.output


def test_the_example_averages_a_group_without_a_metric_by_its_exponential_barycenter(tmp_path):
    # affine2's space is GL+(3) without a metric: the example averages each cluster with
    # ExponentialBarycenter, finds the centre the poses were drawn around, and says why
    # it skips the k-means
    group = build("group", {"type": "affine2"})
    gen = torch.Generator().manual_seed(0)
    centres = group.exp(torch.tensor([[0.4, 0.1, 0.2, -0.1, 0.05, 0.0], [-1.0, -0.1, 0.0, 0.15, 0.0, -0.1]],
                                     dtype=torch.float64))
    clusters = np.repeat([0, 1], 15)
    jitter = group.exp(0.02 * torch.randn(len(clusters), 6, generator=gen, dtype=torch.float64))
    poses = centres[torch.as_tensor(clusters)] @ jitter
    path = tmp_path / "affine-poses.npz"
    np.savez(path, cluster=clusters, pose_group=np.asarray("affine2"), pose_matrix=poses.numpy(),
             pose_geomstats=group.geomstats_point(poses).numpy())
    env = {**os.environ, "GEOMSTATS_BACKEND": "numpy"}
    result = subprocess.run([sys.executable, str(EXAMPLE), str(path), "--k-means", "2"],
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["space"] == "GeneralLinear+(3)" and summary["n_poses"] == 30
    for c, centre in enumerate(centres):
        cluster = summary["clusters"][str(c)]
        assert cluster["n"] == 15 and cluster["in_space"] and 0 < cluster["dispersion"] < 0.2
        assert np.abs(np.asarray(cluster["mean"]) - centre.numpy()).max() < 0.05
    assert "needs a metric" in summary["k_means"]["skipped"]
