"""End to end: a tiny trained run, then `mcvae evaluate`, `mcvae predict`, `mcvae plot`."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from mcvae_framework.cli import cli
from mcvae_framework.errors import ConfigError, DataError

# scikit-learn's 8x8 digits on a 12x12 canvas, rotated in [-90, 90]: small enough to
# train one epoch in seconds, rich enough to exercise every metric (labels, canonical
# images, true poses).
DATA = {"type": "digits", "limit": 160,
        "transform": {"group": "so2", "angle_deg": [-90, 90], "seed": 0, "canvas": 12}}
CONFIG = {
    "data": DATA,
    "group": {"type": "so2", "angle_deg": [-90, 90]},
    "encoder": {"type": "mlp"},
    "decoder": {"type": "mlp"},
    "prior": {"type": "gmm", "n_components": 4},
    "model": {"z_cluster_dim": 3, "z_style_dim": 2},
    "loss": {"mode": "unsupervised", "n_augment": 1},
    "training": {"epochs": 1, "batch_size": 64, "device": "cpu", "seed": 0},
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from mcvae_framework.train.trainer import Trainer

    out = tmp_path_factory.mktemp("run")
    Trainer(CONFIG, out_dir=out, console=False, overwrite=True).run()
    return out


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "experiment.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


def _invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result


def _is_png(path):
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    image = imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) > 50, (path, image.shape)
    return image


# ------------------------------------------------------------------- evaluate


def test_evaluate_writes_report_json_and_md(run_dir):
    result = _invoke("evaluate", run_dir, "--n-actions", "2")
    assert result.exit_code == 0, result.output
    assert "## Clustering" in result.output and "## Pose error" in result.output
    report = json.loads((run_dir / "report.json").read_text())
    for key in ("accuracy", "nmi", "ari"):
        assert 0.0 <= report[key] <= 1.0 or (key == "ari" and -1.0 <= report[key] <= 1.0)
    assert report["n_images"] == 160 and report["split"] == "test"
    assert sum(report["clustering"]["cluster_sizes"]) == 160
    assert len(report["clustering"]["cluster_sizes"]) == 4
    pose = report["pose"]
    assert 0 <= pose["per_cluster_offset"]["rotation_deg"]["median"] <= pose["raw"]["rotation_deg"]["median"] + 1e-9
    assert set(pose["offsets"]) == {str(c) for c, n in enumerate(report["clustering"]["cluster_sizes"]) if n}
    assert 0 <= report["canonical"]["mse"] <= 1 and "mse_offset_aligned" in report["canonical"]
    assert 0 <= report["invariance"]["cluster_agreement"] <= 1
    assert report["invariance"]["z_cluster_relative_change"] >= 0
    assert np.isfinite(report["elbo"]["loss"]) and "reconstruction" in report["elbo"]
    assert (run_dir / "report.md").read_text().startswith("# Evaluation of")


def test_evaluate_matches_a_direct_computation(run_dir):
    from mcvae_framework import build
    from mcvae_framework.report.evaluation import evaluate_run, hungarian_accuracy
    from mcvae_framework.train.trainer import load_trained_model

    report = evaluate_run(run_dir, split="train", n_actions=1)
    config, model = load_trained_model(run_dir)
    data = build("data", config.data, split="train").as_tensors()
    with torch.no_grad():
        clusters = model.cluster_probabilities(data["image"]).argmax(1).numpy()
    assert report["split"] == "train"
    assert report["accuracy"] == pytest.approx(hungarian_accuracy(data["label"].numpy(), clusters)[0])


# -------------------------------------------------------------------- predict


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_predict_csv_from_a_config(run_dir, config_file, tmp_path):
    out = tmp_path / "pred.csv"
    result = _invoke("predict", run_dir, "--data", config_file, "--out", out, "--split", "test")
    assert result.exit_code == 0, result.output
    rows = _rows(out)
    assert len(rows) == 160
    assert list(rows[0])[:3] == ["index", "label", "cluster"]
    assert {"probability_0", "probability_3", "tau_0"} <= set(rows[0])
    probs = np.array([[float(r[f"probability_{k}"]) for k in range(4)] for r in rows])
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
    assert [int(r["cluster"]) for r in rows] == probs.argmax(1).tolist()


def test_predict_npz_with_canonical_images_agrees_with_the_model(run_dir, config_file, tmp_path):
    from mcvae_framework import build
    from mcvae_framework.train.trainer import load_trained_model

    out = tmp_path / "pred.npz"
    result = _invoke("predict", run_dir, "--data", config_file, "--out", out, "--canonical", "--split", "test")
    assert result.exit_code == 0, result.output
    saved = np.load(out)
    assert saved["canonical"].shape == (160, 1, 12, 12)
    assert saved["probabilities"].shape == (160, 4) and saved["tau"].shape == (160, 1)
    _, model = load_trained_model(run_dir)
    images = build("data", DATA, split="test").as_tensors()["image"]
    expected = model.predict(images)
    assert np.array_equal(saved["cluster"], expected["cluster"].numpy())
    assert np.allclose(saved["tau"], expected["tau"].numpy(), atol=1e-5)


def test_predict_on_a_users_array_file(run_dir, tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(30, 12, 12), dtype=np.uint8)
    source = tmp_path / "mine.npy"
    np.save(source, images)
    out = tmp_path / "mine.npz"
    result = _invoke("predict", run_dir, "--data", source, "--out", out)
    assert result.exit_code == 0, result.output
    saved = np.load(out)
    assert len(saved["cluster"]) == 30  # every image, whatever split the dataset plugin makes
    assert saved["index"].tolist() == list(range(30))  # in the file's order
    assert "label" not in saved.files and "split" not in saved.files
    _, model = load_trained_model_of(run_dir)
    expected = model.predict(torch.as_tensor(images, dtype=torch.float32)[:, None] / 255)
    assert np.array_equal(saved["cluster"], expected["cluster"].numpy())


def load_trained_model_of(run_dir):
    from mcvae_framework.train.trainer import load_trained_model

    return load_trained_model(run_dir)


def _write_png(path, seed, side=12):
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, size=(side, side), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


def test_predict_on_a_folder_names_every_file_in_folder_order(run_dir, tmp_path):
    folder = tmp_path / "my images"
    names = ["b, second.png", "a_first.png", "c.png", "d.png", "e.png", "f.png", "g.png"]
    pixels = {name: _write_png(folder / name, seed) for seed, name in enumerate(names)}
    (folder / "notes.txt").write_text("not an image")  # skipped with a warning, not an error
    with pytest.warns(UserWarning, match="notes.txt"):
        result = _invoke("predict", run_dir, "--data", folder)
    assert result.exit_code == 0, result.output
    out = run_dir / "predictions" / "my images.csv"  # the default: inside the run folder
    assert str(out) in result.output
    rows = _rows(out)
    assert [r["name"] for r in rows] == sorted(names)  # every file, in folder order, named
    assert list(rows[0])[:2] == ["name", "index"] and "split" not in rows[0]
    _, model = load_trained_model_of(run_dir)
    images = torch.stack([torch.as_tensor(pixels[n], dtype=torch.float32)[None] / 255 for n in sorted(names)])
    assert [int(r["cluster"]) for r in rows] == model.predict(images)["cluster"].tolist()


def test_predict_split_column_and_one_split_on_demand(run_dir, tmp_path):
    folder = tmp_path / "classes"
    for i in range(10):
        _write_png(folder / ("cat" if i % 2 else "dog") / f"{i:02d}.png", i)
    result = _invoke("predict", run_dir, "--data", folder, "--out", tmp_path / "all.csv", "--split-column")
    assert result.exit_code == 0, result.output
    rows = _rows(tmp_path / "all.csv")
    assert [r["name"] for r in rows] == [f"cat/{i:02d}.png" for i in range(1, 10, 2)] + \
        [f"dog/{i:02d}.png" for i in range(0, 10, 2)]
    assert [r["label"] for r in rows] == ["0"] * 5 + ["1"] * 5
    assert {r["split"] for r in rows} == {"train", "test"}
    result = _invoke("predict", run_dir, "--data", folder, "--out", tmp_path / "test.npz", "--split", "test")
    assert result.exit_code == 0, result.output
    saved = np.load(tmp_path / "test.npz")  # no pickle needed for the names
    assert sorted(saved["name"].tolist()) == sorted(r["name"] for r in rows if r["split"] == "test")
    assert "split" not in saved.files


def test_predict_every_image_of_a_config_in_source_order(run_dir, config_file, tmp_path):
    from mcvae_framework import build

    result = _invoke("predict", run_dir, "--data", config_file, "--out", tmp_path / "all.csv", "--split-column")
    assert result.exit_code == 0, result.output
    rows = _rows(tmp_path / "all.csv")
    assert len(rows) == 320  # limit 160 per split, both splits
    index = [int(r["index"]) for r in rows]
    assert index == sorted(index)
    test = build("data", DATA, split="test")
    assert sorted(i for i, r in zip(index, rows) if r["split"] == "test") == sorted(test.source_indices)
    # an image keeps the pose it has in its split: predictions agree with the split's own
    by_split = _rows(tmp_path / "all.csv")
    result = _invoke("predict", run_dir, "--data", config_file, "--out", tmp_path / "test.csv", "--split", "test")
    assert result.exit_code == 0, result.output
    test_rows = {r["index"]: r for r in _rows(tmp_path / "test.csv")}
    for r in by_split:
        if r["split"] == "test":
            assert r["tau_0"] == test_rows[r["index"]]["tau_0"]


def test_predict_refuses_bad_outputs_and_inputs(run_dir, config_file, tmp_path):
    result = _invoke("predict", run_dir, "--data", config_file, "--out", tmp_path / "pred.txt")
    assert result.exit_code != 0 and "unknown output format" in result.output
    result = _invoke("predict", run_dir, "--data", config_file, "--out", tmp_path / "pred.csv", "--canonical")
    assert result.exit_code != 0 and ".npz" in result.output
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((5, 20, 20), dtype=np.uint8))
    result = _invoke("predict", run_dir, "--data", wrong, "--out", tmp_path / "w.csv")
    assert result.exit_code != 0 and "trained on (1, 12, 12)" in result.output
    assert "Traceback" not in result.output


def test_parquet_needs_an_engine_or_writes_a_table(tmp_path):
    from mcvae_framework.report.prediction import write_predictions

    result = {"index": np.arange(3), "cluster": np.array([0, 1, 1]),
              "probabilities": np.full((3, 2), 0.5, dtype=np.float32), "tau": np.zeros((3, 1), np.float32)}
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        with pytest.raises(DataError, match="pip install pyarrow"):
            write_predictions(result, tmp_path / "p.parquet")
    else:
        import pandas as pd

        table = pd.read_parquet(write_predictions(result, tmp_path / "p.parquet"))
        assert list(table.columns) == ["index", "cluster", "probability_0", "probability_1", "tau_0"]
    with pytest.raises(ConfigError, match="unknown output format"):
        write_predictions(result, tmp_path / "p.xlsx")


# ----------------------------------------------------------------------- plot


def test_plot_writes_every_figure(run_dir, tmp_path):
    result = _invoke("plot", run_dir, "--out-dir", tmp_path / "plots", "--method", "pca", "--n-images", "6")
    assert result.exit_code == 0, result.output
    names = {"reconstructions", "latent_map", "prototypes", "training_curves"}
    for name in names:
        assert name in result.output
        _is_png(tmp_path / "plots" / f"{name}.png")


def test_prototype_images_move_the_decoded_means(run_dir):
    from mcvae_framework.report.plotting import prototype_images
    from mcvae_framework.train.trainer import load_trained_model

    _, model = load_trained_model(run_dir)
    images, tau = prototype_images(model, n_poses=3)
    assert images.shape == (4, 4, 1, 12, 12) and tau.shape == (3, 1)
    assert torch.all(tau[1:, 0] >= tau[:-1, 0])  # a sorted sweep
    expected = model.group.act(images[:, 0], model.group.exp(tau[1:2].expand(4, -1)))
    assert torch.allclose(images[:, 2], expected, atol=1e-6)
    assert torch.allclose(images[:, 0], model.decode(model.prior.component_means(), None), atol=1e-6)


def test_latent_map_and_curves_from_plain_arrays(tmp_path):
    from mcvae_framework.report.plotting import embed_2d, latent_map_figure, training_curves_figure

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    latents = rng.normal(size=(60, 6)) + 5 * np.eye(6)[labels]
    coords, used = embed_2d(latents, "tsne")
    assert coords.shape == (60, 2) and used == "tsne"
    _is_png(latent_map_figure(latents, labels, tmp_path / "map.png", labels=labels, method="pca"))
    metrics = tmp_path / "metrics.csv"
    metrics.write_text("epoch,phase,seconds,images_per_second,train_loss,test_loss\n"
                       "1,train,1.0,100,5.0,6.0\n2,train,1.0,110,4.0,\n")
    _is_png(training_curves_figure(metrics, tmp_path / "curves.png"))
    with pytest.raises(ValueError, match="tsne, pca or auto"):
        embed_2d(latents, "umap")


def test_commands_on_a_folder_without_a_run_say_so(tmp_path):
    for args in (("evaluate", tmp_path), ("plot", tmp_path)):
        result = _invoke(*args)
        assert result.exit_code != 0
        assert "last.pt" in result.output and "Traceback" not in result.output


def test_prototypes_say_how_many_images_each_cluster_holds(run_dir, tmp_path, monkeypatch):
    from mcvae_framework.report import plotting
    from mcvae_framework.train.trainer import load_trained_model

    _, model = load_trained_model(run_dir)
    figures = []
    monkeypatch.setattr(plotting, "_save", lambda fig, path: figures.append(fig) or path)
    plotting.prototypes_figure(model, tmp_path / "p.png", n_poses=2, counts=[5, 0, 1200, 3], split="test")
    ax = figures[0].axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["cluster 0 (5 images)", "cluster 1 (empty)", "cluster 2 (1,200 images)",
                      "cluster 3 (3 images)"]
    assert "1 empty" in ax.get_title()
    with pytest.raises(ValueError, match="counts has 2 entries for 4 clusters"):
        plotting.prototypes_figure(model, tmp_path / "q.png", counts=[1, 2])


# ------------------------------------------------------------------- predict --with-graph

GRAPH_CONFIG = {**CONFIG, "graph": {"enabled": True, "neighbours": 5, "confident_fraction": 1.0},
                "loss": {**CONFIG["loss"], "self_label_weight": 5},
                "training": {**CONFIG["training"], "epochs": 2, "transductive": True}}


@pytest.fixture(scope="module")
def graph_run(tmp_path_factory):
    from mcvae_framework.train.trainer import Trainer

    out = tmp_path_factory.mktemp("graph_run")
    Trainer(GRAPH_CONFIG, out_dir=out / "run", console=False, overwrite=True).run()
    config = out / "experiment.yaml"
    config.write_text(yaml.safe_dump(GRAPH_CONFIG))
    return out / "run", config


def test_predict_with_graph_writes_the_consensus_that_evaluate_scores(graph_run, tmp_path):
    from mcvae_framework.report.evaluation import clustering_metrics, evaluate_run

    run, config = graph_run
    result = _invoke("predict", run, "--data", config, "--split", "test", "--with-graph", "--out", tmp_path / "t.csv")
    assert result.exit_code == 0, result.output
    rows = _rows(tmp_path / "t.csv")
    labels = np.array([int(r["label"]) for r in rows])
    clusters = np.array([int(r["cluster"]) for r in rows])
    report = evaluate_run(run, split="test")
    assert clustering_metrics(labels, clusters, n_clusters=4)["accuracy"] == report["consensus"]["accuracy"]
    assert sum(r["cluster"] != r["model_cluster"] for r in rows) == report["consensus"]["moved_images"]
    model_clusters = np.array([int(r["model_cluster"]) for r in rows])
    assert clustering_metrics(labels, model_clusters, n_clusters=4)["accuracy"] == report["accuracy"]
    probabilities = np.array([[float(r[f"probability_{k}"]) for k in range(4)] for r in rows])
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-5)
    # every image, in source order: the same clusters for the test images
    result = _invoke("predict", run, "--data", config, "--with-graph", "--out", tmp_path / "all.csv")
    assert result.exit_code == 0, result.output
    every = {r["index"]: r["cluster"] for r in _rows(tmp_path / "all.csv")}
    assert all(every[r["index"]] == r["cluster"] for r in rows)


def test_predict_with_graph_scores_each_image_once(graph_run, tmp_path, monkeypatch):
    """The predicted images' probabilities come from predict's own model pass: the consensus
    scores only the graph's other nodes, and reads the same as scoring every node itself."""
    from mcvae_framework.report import consensus
    from mcvae_framework.report.inference import load_run
    from mcvae_framework.report.prediction import load_prediction_data, predict_run
    from mcvae_framework.runtime.checkpoint import load_checkpoint

    run, config = graph_run
    scored = []
    counted = consensus.cluster_probabilities

    def counting(model, images, **options):
        scored.append(len(images))
        return counted(model, images, **options)

    monkeypatch.setattr(consensus, "cluster_probabilities", counting)
    predict_run(run, config, tmp_path / "all.csv", with_graph=True)
    assert scored == []  # every node is a predicted image
    predict_run(run, config, tmp_path / "test.csv", split="test", with_graph=True)
    run_config, model = load_run(run)
    n_train = len(load_prediction_data(config, "train", config=run_config))
    assert scored == [n_train]  # the training images only
    monkeypatch.setattr(consensus, "cluster_probabilities", counted)
    dataset = load_prediction_data(config, "test", config=run_config)
    graph = load_checkpoint(run / "checkpoints" / "last.pt")["graph"]
    itself = consensus.consensus_of_images(model, run_config, graph, dataset, where="test")
    images = consensus.dataset_tensors(dataset, keys=("image",))["image"]
    given = consensus.consensus_of_images(model, run_config, graph, dataset, where="test", images=images,
                                          probabilities=counted(model, images))
    torch.testing.assert_close(given, itself)


def test_predict_with_graph_refuses_images_that_are_not_the_runs_graph(graph_run, run_dir, config_file, tmp_path):
    run, config = graph_run
    other = tmp_path / "other.npy"
    np.save(other, np.zeros((5, 12, 12), dtype=np.uint8))
    result = _invoke("predict", run, "--data", other, "--with-graph", "--out", tmp_path / "o.csv")
    assert result.exit_code != 0 and "is not in the run's graph, which holds its training images and test" in \
        result.output
    turned = tmp_path / "turned.yaml"  # the same digits at the same positions, turned otherwise
    turned.write_text(yaml.safe_dump({**GRAPH_CONFIG, "data": {**DATA, "transform": {**DATA["transform"], "seed": 1}}}))
    result = _invoke("predict", run, "--data", turned, "--with-graph", "--out", tmp_path / "t.csv")
    assert result.exit_code != 0 and "not those the run's graph was built on" in result.output
    result = _invoke("predict", run_dir, "--data", config_file, "--with-graph", "--out", tmp_path / "n.csv")
    assert result.exit_code != 0 and "trained without one (graph.enabled: false)" in result.output
    assert "Traceback" not in result.output
