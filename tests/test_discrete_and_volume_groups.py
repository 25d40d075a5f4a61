"""Groups beyond the plane's connected maps (issue 30): ``o2`` (mirror images), ``so3``
(rotations of volumes) and the worked ``c4`` example pass the contract kit; the plugins
written before groups could declare a data kind or a discrete part still pass it and
still train, evaluate, plot and predict; the closed forms and the data-kind checks."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import plugins_before_issue30
from mcvae_framework import ConfigError, build, validate_config
from mcvae_framework.cli import cli
from mcvae_framework.config import plugins
from mcvae_framework.testing import DatasetContract, DecoderContract, EncoderContract, LieGroupContract

ROOT = Path(__file__).resolve().parents[1]
QUARTER_TURNS = ROOT / "examples" / "mcvae-plugin-quarter-turns" / "src"


@pytest.fixture(scope="module", autouse=True)
def extra_plugins():
    """The built-ins plus the c4 example and the plugins written before issue 30, registered
    directly on a fresh process-wide plugin manager (as docs/plugins.md shows)."""
    sys.path.insert(0, str(QUARTER_TURNS))
    import mcvae_quarter_turns

    pm = plugins.create_plugin_manager()
    pm.register(mcvae_quarter_turns, name="quarter-turns")
    pm.register(plugins_before_issue30, name="before-issue-30")
    previous = plugins.set_plugin_manager(pm)
    yield
    plugins.set_plugin_manager(previous)
    sys.path.remove(str(QUARTER_TURNS))


# ---------------------------------------------------------------- the contract kit


class TestO2Contract(LieGroupContract):
    group_config = {"type": "o2", "angle_deg": [-90, 90]}


class TestSO3Contract(LieGroupContract):
    group_config = {"type": "so3"}


class TestQuarterTurnsContract(LieGroupContract):
    group_config = {"type": "c4"}


class TestShearWrittenBeforeIssue30(LieGroupContract):
    group_config = {"type": "docs_shear"}


class TestBareTurnsWrittenBeforeIssue30(LieGroupContract):
    group_config = {"type": "docs_turn"}


class TestConvEncoderOnVolumes(EncoderContract):
    encoder_config = {"type": "conv", "channels": [4, 8]}
    image_shapes = ((1, 12, 12, 12), (2, 9, 9, 9))


class TestConvDecoderOnVolumes(DecoderContract):
    decoder_config = {"type": "conv", "channels": [8, 4]}
    image_shapes = ((1, 12, 12, 12), (1, 9, 9, 9))


class TestMLPEncoderOnVolumes(EncoderContract):
    encoder_config = {"type": "mlp", "hidden": [16]}
    image_shapes = ((1, 8, 8, 8),)


class TestMLPDecoderOnVolumes(DecoderContract):
    decoder_config = {"type": "mlp", "hidden": [16]}
    image_shapes = ((1, 8, 8, 8),)


@pytest.fixture(scope="module")
def volume_file(tmp_path_factory):
    """40 random 10^3 volumes with labels, as an .npz of N x D x H x W."""
    path = tmp_path_factory.mktemp("volumes") / "volumes.npz"
    rng = np.random.default_rng(0)
    np.savez(path, images=(rng.random((40, 10, 10, 10)) * 255).astype(np.uint8), labels=np.arange(40) % 2)
    return path


class TestArraysOfVolumesWithRotations(DatasetContract):
    dataset_config = {"type": "arrays", "path": "", "transform": {"group": "so3", "seed": 0}}

    @pytest.fixture(autouse=True)
    def _path(self, volume_file):
        type(self).dataset_config = {**self.dataset_config, "path": str(volume_file)}


class TestMirroredDigits(DatasetContract):
    dataset_config = {"type": "digits", "limit": 40, "transform": {"group": "o2", "angle_deg": [-90, 90], "seed": 0}}


# ---------------------------------------------------------------- closed forms, poses, heads


def test_so3_log_is_accurate_near_a_half_turn_and_at_the_identity():
    group = build("group", {"type": "so3"})
    axis = torch.nn.functional.normalize(torch.randn(50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    for angle in (math.pi, math.pi - 1e-7, math.pi - 1e-3, 2.9, 1e-9, 0.0):
        tau = axis * angle
        g = group.exp(tau)
        assert torch.allclose(group.exp(group.log(g)), g, atol=1e-9)
        assert torch.allclose(group.log(g).norm(dim=1), tau.norm(dim=1), atol=1e-7)
    # the Haar prior is normalised: its importance-sampled integral under a wide normal is 1
    s = 2.0
    x = torch.randn(200_000, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * s
    log_q = -0.5 * (x * x).sum(1) / s**2 - 1.5 * math.log(2 * math.pi * s**2)
    assert abs(float((group.log_prior(x) - log_q).exp().mean()) - 1) < 0.02


def test_so3_samples_are_haar_uniform_and_the_grid_is_even():
    group = build("group", {"type": "so3"})
    angles = group.sample(20_000, torch.Generator().manual_seed(2), dtype=torch.float64).norm(dim=1)
    # Haar: the angle has density (1 - cos t) / pi on [0, pi], mean pi/2 + 2/pi
    assert abs(float(angles.mean()) - (math.pi / 2 + 2 / math.pi)) < 0.02
    narrow = build("group", {"type": "so3", "max_angle_deg": 40})
    assert narrow.sample(2000, torch.Generator().manual_seed(3)).norm(dim=1).max() <= math.radians(40) + 1e-6
    grid = group.exp(group.search_poses(200).double())
    m = len(grid)
    assert abs(m - 200) <= 10 and torch.equal(grid[0], torch.eye(3, dtype=torch.float64))
    gaps = group.distance(grid[:, None].expand(-1, m, 3, 3).reshape(-1, 3, 3),
                          grid[None].expand(m, -1, 3, 3).reshape(-1, 3, 3))["rotation_deg"].view(m, m)
    nearest = (gaps + 1e3 * torch.eye(m, dtype=torch.float64)).min(1).values
    assert nearest.max() < 2.5 * nearest.median(), "the grid has holes"
    assert group.distance(grid, group.identity(m, dtype=torch.float64))["rotation_deg"].max() <= 60 + 1e-6


def test_pose_head_of_a_discrete_group_starts_uniform_at_the_identity_and_selects_the_mode():
    from mcvae_framework.model.pose_head import PoseHead

    group = build("group", {"type": "o2"})
    head = PoseHead(5, group)
    features = torch.randn(4, 5)
    pose = head(features)
    assert pose.logits.shape == (4, 2) and torch.allclose(pose.logits, torch.zeros(4, 2))
    assert pose.per_component.mean.shape == (4, 2, 1) and torch.allclose(pose.mean, torch.zeros(4, 1))
    with torch.no_grad():
        head.out.bias[-1] = 1.0  # prefer the reflection
        head.out.bias[4] = 1.0  # its sin beside its cos: an eighth of a turn
    pose = head(features)
    assert pose.component.tolist() == [1] * 4
    assert torch.allclose(pose.mean[:, 0], torch.full((4,), math.pi / 4))


def test_every_component_follows_the_moves_when_the_head_is_equivariant():
    from types import SimpleNamespace

    from mcvae_framework.model.pose_head import PoseEncoding, Posterior
    from mcvae_framework.model.pose_terms import every_component_consistency

    group = build("group", {"type": "o2"})
    gen = torch.Generator().manual_seed(4)
    n, copies = 6, 3
    poses, _, _ = group.sample_elements(n, gen, dtype=torch.float64)
    h, _, _ = group.sample_elements(n * copies, gen, dtype=torch.float64)
    reflection = group.component_elements(dtype=torch.float64)

    def encoding(p):
        # hypothesis k: the pose p with its own reflection undone, then reflected k times
        undone = group.compose(p, reflection[group.component_of(p)])
        per = torch.stack([group.split_element(group.compose(undone, reflection[k].expand_as(p)))[1] for k in (0, 1)], 1)
        enc = PoseEncoding(per[:, 0], torch.zeros_like(per[:, 0]), torch.zeros(len(p), 2), Posterior(per, per * 0))
        return SimpleNamespace(pose=enc)

    model = SimpleNamespace(group=group, pose_element=group.element)
    moved = group.compose(h, poses.repeat_interleave(copies, dim=0))
    exact = every_component_consistency(model, encoding(poses), encoding(moved), h, copies)
    assert exact.shape == (n * copies,) and exact.max() < 1e-12
    wrong = every_component_consistency(model, encoding(poses), encoding(moved.flip(0)), h, copies)
    assert wrong.max() > 0.01


def test_the_component_cross_entropy_of_the_pose_guide_scales_with_its_weight():
    from types import SimpleNamespace

    from mcvae_framework.model.pose_head import PoseEncoding, Posterior
    from mcvae_framework.model.pose_terms import orthogonal_guidance

    group = build("group", {"type": "o2"})
    gen = torch.Generator().manual_seed(7)
    n = 8
    poses, tau, component = group.sample_elements(n, gen, dtype=torch.float64)
    per = tau[:, None, :].expand(n, 2, 1).clone()
    logits = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    pose = PoseEncoding(tau, torch.zeros_like(tau), logits, Posterior(per, per * 0))
    enc = SimpleNamespace(pose=pose, tau=pose, component=pose.component)
    model = SimpleNamespace(group=group, pose_element=group.element)
    targets = group.orthogonal_part(poses)
    clusters, weight = torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.float64)
    terms = [orthogonal_guidance(model, enc, targets, clusters, weight, 1, component_weight=w) for w in (0.0, 0.1, 1.0)]
    # the squared part is the same whatever the weight; the cross-entropy is weighted linearly
    assert terms[2] > terms[0]
    assert torch.allclose(terms[1] - terms[0], 0.1 * (terms[2] - terms[0]))
    assert torch.allclose(orthogonal_guidance(model, enc, targets, clusters, weight, 1), terms[2])


def test_orthogonal_synchronisation_recovers_rotations_and_reflections():
    from mcvae_framework.graph.synchronisation import synchronise_orthogonal

    gen = torch.Generator().manual_seed(5)
    so3, o2 = build("group", {"type": "so3"}), build("group", {"type": "o2"})
    n, k = 60, 6
    neighbours = torch.stack([torch.randperm(n, generator=gen)[:k] for _ in range(n)])
    labels = (torch.arange(n) % 2).numpy()
    for group, special in ((so3, True), (o2, False)):
        truth = group.orthogonal_part(group.sample_elements(n, gen, dtype=torch.float64)[0])
        relative = truth[:, None] @ truth[neighbours].transpose(-1, -2)  # x_i = B_ij x_j
        found = synchronise_orthogonal(neighbours, relative, labels, special=special).double()
        for cluster in (0, 1):
            members = torch.as_tensor(labels == cluster)
            # up to one orthogonal matrix per cluster: T_i^T found_i is the same for all members
            offsets = truth[members].transpose(1, 2) @ found[members]
            assert (offsets - offsets[:1]).abs().max() < 1e-4
        assert torch.allclose(found @ found.transpose(1, 2), torch.eye(found.shape[-1], dtype=found.dtype).expand_as(found),
                              atol=1e-5)


def test_pose_metrics_forgive_one_flip_per_cluster():
    from mcvae_framework.report.pose_evaluation import pose_metrics

    group = build("group", {"type": "o2"})
    gen = torch.Generator().manual_seed(6)
    _, tau, component = group.sample_elements(200, gen, dtype=torch.float64)
    clusters = np.arange(200) % 2
    offset = group.element(torch.tensor([[0.7]], dtype=torch.float64), torch.tensor([1]))  # cluster 1: a flip and a turn
    truth = group.element(tau, component)
    predicted = torch.where(torch.as_tensor(clusters == 1)[:, None, None],
                            group.compose(truth, group.inverse(offset).expand(200, 3, 3)), truth)
    predicted_component, predicted_tau = group.split_element(predicted)
    report = pose_metrics(group, predicted_tau, tau, clusters, component_pred=predicted_component,
                          component_true=component)
    assert report["component_accuracy"]["per_cluster_offset"] == 1.0
    assert report["component_accuracy"]["raw"] == pytest.approx(0.5, abs=0.1)
    assert report["per_cluster_offset"]["rotation_deg"]["median"] < 1e-6
    assert report["offsets"]["1"]["component"] == 1


def test_config_validate_names_the_data_kind_a_group_moves(tmp_path, volume_file):
    images_with_so3 = tmp_path / "images_so3.yaml"
    images_with_so3.write_text("data: {type: digits}\ngroup: {type: so3}\nencoder: {type: mlp}\ndecoder: {type: mlp}\n"
                               "prior: {type: gmm, n_components: 3}\n")
    volumes_with_so2 = tmp_path / "volumes_so2.yaml"
    volumes_with_so2.write_text(f"data: {{type: arrays, path: {volume_file}}}\ngroup: {{type: so2}}\nencoder: {{type: mlp}}\n"
                                "decoder: {type: mlp}\nprior: {type: gmm, n_components: 3}\n")
    for path, wanted, found in ((images_with_so3, "3-D volumes", "2-D images"), (volumes_with_so2, "2-D images", "3-D volumes")):
        result = CliRunner().invoke(cli, ["config", "validate", str(path)])
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert f"moves {wanted}" in result.output and f"yields {found}" in result.output and str(path) in result.output
    # a transform whose group cannot move the data: a clear ConfigError when it is built
    with pytest.raises(ConfigError, match="moves volumes"):
        build("data", {"type": "digits", "limit": 20, "transform": {"group": "so3"}}, split="train")


def test_mrc_reads_a_volume_stack(tmp_path):
    import mrcfile

    volumes = np.random.default_rng(7).normal(size=(12, 8, 8, 8)).astype(np.float32)
    with mrcfile.new(tmp_path / "subtomograms.mrcs") as handle:
        handle.set_data(volumes)
    data = {"type": "mrc", "path": str(tmp_path / "subtomograms.mrcs"), "downsample": 6}
    dataset = build("data", data, split="train")
    assert dataset.image_shape == (1, 6, 6, 6) and len(dataset) == 10
    images = dataset.as_tensors()["image"]
    assert images.min() >= 0 and images.max() <= 1
    config = validate_config({"data": data, "group": {"type": "so3"}, "encoder": {"type": "mlp"},
                              "decoder": {"type": "mlp"}, "prior": {"type": "gmm", "n_components": 2}})
    assert config.data.data_kind() == "volume"


# ---------------------------------------------------------------- end to end, tiny


def _tiny_config(data: dict, group: dict, **graph) -> dict:
    config = {
        "data": data, "group": group, "encoder": {"type": "mlp", "hidden": [32]},
        "decoder": {"type": "mlp", "hidden": [32]}, "prior": {"type": "gmm", "n_components": 3},
        "model": {"z_cluster_dim": 3, "z_style_dim": 2},
        "loss": {"mode": "unsupervised", "n_augment": 1, "pretrain_epochs": 1},
        "training": {"epochs": 1, "batch_size": 32, "device": "cpu", "seed": 0, "progress": False},
    }
    if graph:
        config["graph"] = {"enabled": True, "neighbours": 4, "confident_fraction": 1.0, **graph}
        config["loss"].update(self_label_weight=5, pose_guide_weight=5)
    return config


def _train_evaluate_plot_predict(config: dict, tmp_path: Path, predict: bool = True) -> dict:
    from mcvae_framework.train.trainer import Trainer

    run = tmp_path / "run"
    Trainer(config, out_dir=run, console=False, overwrite=True).run()
    result = CliRunner().invoke(cli, ["evaluate", str(run), "--n-actions", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads((run / "report.json").read_text())
    result = CliRunner().invoke(cli, ["plot", str(run), "--n-images", "4"])
    assert result.exit_code == 0, result.output
    assert (run / "plots" / "prototypes.png").read_bytes()[:4] == b"\x89PNG"
    if predict:
        (tmp_path / "experiment.json").write_text(json.dumps(config))
        result = CliRunner().invoke(cli, ["predict", str(run), "--data", str(tmp_path / "experiment.json"),
                                          "--out", str(tmp_path / "poses.npz"), "--split", "test"])
        assert result.exit_code == 0, result.output
        report["predictions"] = dict(np.load(tmp_path / "poses.npz"))
    return report


DIGITS = {"type": "digits", "limit": 96}


def test_mirrored_digits_train_with_the_graph_and_report_a_reflection_accuracy(tmp_path, one_thread):
    transform = {"group": "o2", "angle_deg": [-90, 90], "seed": 0, "canvas": 12}
    report = _train_evaluate_plot_predict(
        _tiny_config({**DIGITS, "transform": transform}, {"type": "o2", "angle_deg": [-90, 90]}, search_size=5), tmp_path)
    accuracy = report["pose"]["component_accuracy"]
    assert accuracy["name"] == "reflection" and 0 <= accuracy["raw"] <= 1
    assert accuracy["per_cluster_offset"] >= 0.5  # one flip per cluster forgiven: never worse than chance
    assert set(report["pose"]["per_cluster_offset"]) == {"reflection", "rotation_deg", "rotation_deg_mod180"}
    predictions = report["predictions"]
    assert set(np.unique(predictions["component"])) <= {0, 1}
    # the written poses are the elements: a mirror image has a negative determinant
    det = np.linalg.det(predictions["pose_matrix"][:, :2, :2])
    assert np.array_equal(det < 0, predictions["component"] == 1)


def test_rotated_volumes_train_with_the_graph_and_report_a_rotation_error(tmp_path, one_thread, volume_file):
    data = {"type": "arrays", "path": str(volume_file), "transform": {"group": "so3", "seed": 0}}
    config = _tiny_config(data, {"type": "so3"}, search_size=8, pca_dim=8)
    config["encoder"] = {"type": "conv", "channels": [4, 8]}
    report = _train_evaluate_plot_predict(config, tmp_path)
    assert report["pose"]["primary_error"] == "rotation_deg"
    assert report["pose"]["offset_mean"]["path"] == "geomstats"  # SpecialOrthogonal(3)
    assert 0 <= report["pose"]["per_cluster_offset"]["rotation_deg"]["median"] <= 180
    assert report["predictions"]["pose_matrix"].shape[1:] == (3, 3)


def test_the_quarter_turns_train(tmp_path, one_thread):
    report = _train_evaluate_plot_predict(
        _tiny_config({**DIGITS, "transform": {"group": "c4", "seed": 0}}, {"type": "c4"}), tmp_path, predict=False)
    assert report["pose"]["component_accuracy"]["name"] == "quarter turn"


@pytest.mark.parametrize("tag", ["docs_shear", "docs_turn"])
def test_groups_written_before_issue_30_train_evaluate_plot_and_predict(tag, tmp_path, one_thread):
    config = _tiny_config({**DIGITS, "transform": {"group": tag, "seed": 0, "canvas": 12}}, {"type": tag})
    report = _train_evaluate_plot_predict(config, tmp_path)
    assert "component_accuracy" not in report["pose"]
    assert report["pose"]["primary_error"] == ("shear" if tag == "docs_shear" else "rotation_deg")
    assert "component" not in report["predictions"] and report["predictions"]["pose_matrix"].shape[1:] == (3, 3)


def test_data_show_draws_volumes_as_projections(tmp_path, volume_file):
    config = tmp_path / "volumes.yaml"
    config.write_text(f"data: {{type: arrays, path: {volume_file}, transform: {{group: so3, seed: 0}}}}\n"
                      "group: {type: so3}\nencoder: {type: conv}\ndecoder: {type: conv}\nprior: {type: gmm, n_components: 2}\n")
    result = CliRunner().invoke(cli, ["data", "show", str(config), "--out", str(tmp_path / "grid.png"), "-n", "4"])
    assert result.exit_code == 0, result.output
    assert "1 x 10 x 10 x 10 (C x D x H x W)" in result.output
    assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"


def test_the_pose_guide_keeps_each_cluster_in_the_graphs_reflection_frame():
    # The model's poses mirror the graph's on 6 of 8 images: an offset chosen from them would be
    # a flip and teach those 6 reflections back; the guide teaches the graph's own reflections
    # (the free flip per cluster is fixed at the graph's), whatever the model says now.
    from types import SimpleNamespace

    import torch.nn.functional as F

    from mcvae_framework.model.pose_head import PoseEncoding, Posterior
    from mcvae_framework.model.pose_terms import orthogonal_guidance

    group = build("group", {"type": "o2"})
    gen = torch.Generator().manual_seed(3)
    n = 8
    poses, tau, component = group.sample_elements(n, gen, dtype=torch.float64)
    flip = torch.tensor([1, 1, 1, 1, 1, 1, 0, 0])
    own_component = (component + flip) % 2
    per = tau[:, None, :].expand(n, 2, 1).clone()
    logits = F.one_hot(own_component, 2).double() * 3.0
    pose = PoseEncoding(tau, torch.zeros_like(tau), logits, Posterior(per, per * 0))
    enc = SimpleNamespace(pose=pose, tau=pose, component=pose.component)
    model = SimpleNamespace(group=group, pose_element=group.element)
    targets = group.orthogonal_part(poses)
    clusters, weight = torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.float64)
    with_ce, without = (orthogonal_guidance(model, enc, targets, clusters, weight, 1, component_weight=w) for w in (1.0, 0.0))
    graphs = F.nll_loss(torch.log_softmax(logits, -1), component)
    assert torch.allclose(with_ce - without, graphs)
    assert not torch.allclose(graphs, F.nll_loss(torch.log_softmax(logits, -1), own_component))
