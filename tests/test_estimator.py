"""InvariantClustering: scikit-learn's conventions (its own estimator checks where they
apply without training), the quickstart's settings as defaults, and a tiny fit whose
outputs, config file and determinism are checked. Its accuracy against the command line
on the quickstart's images is measured by benchmarks/estimator_quickstart.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from sklearn.utils import estimator_checks as checks

from mcvae_framework import load_config, validate_config
from mcvae_framework.config.experiment import config_to_dict
from mcvae_framework.errors import DataError
from mcvae_framework.estimator import InvariantClustering, as_images

ROOT = Path(__file__).resolve().parents[1]
NAME = "InvariantClustering"


@pytest.mark.parametrize("check", [
    checks.check_no_attributes_set_in_init,
    checks.check_get_params_invariance,
    checks.check_set_params,
    checks.check_estimators_unfitted,
    checks.check_estimator_cloneable,
    checks.check_estimator_repr,
    checks.check_do_not_raise_errors_in_init_or_set_params,
    checks.check_estimator_tags_renamed,
], ids=lambda check: check.__name__)
def test_scikit_learn_checks_that_need_no_training(check):
    check(NAME, InvariantClustering())


def test_default_parameters_are_constructible():
    checks.check_parameters_default_constructible(NAME, InvariantClustering())


def test_the_defaults_are_the_quickstarts_settings():
    quickstart = config_to_dict(load_config(ROOT / "configs" / "quickstart.yaml"))
    ours = config_to_dict(validate_config(InvariantClustering().config_dict(data_path="images.npy",
                                                                            run_dir="runs/quickstart")))
    for config in (quickstart, ours):
        config.pop("data")
    assert ours == quickstart


def test_arguments_reach_the_config():
    config = InvariantClustering(n_clusters=4, group="se2", angle_deg=(-30, 30), encoder="mlp", epochs=3,
                                 graph=False, settings={"loss.beta": 2.5}).config_dict(data_path="x.npy")
    assert config["prior"]["n_components"] == 4 and config["prior"]["learn_weights"] is False
    assert config["group"] == {"type": "se2", "angle_deg": [-30.0, 30.0]}
    assert config["encoder"] == {"type": "mlp"} and config["training"]["epochs"] == 3
    assert config["graph"]["enabled"] is False and config["loss"]["self_label_weight"] == 0
    assert config["loss"]["beta"] == 2.5 and config["data"]["path"] == "x.npy"


def test_images_in_every_accepted_shape_and_range():
    digits = load_digits().images[:5]  # 8 x 8 floats 0..16
    as_square = as_images((digits / 16.0).astype(np.float64))
    assert as_square.shape == (5, 1, 8, 8) and as_square.dtype == np.float32 and as_square.max() <= 1
    flat = as_images((digits / 16.0).reshape(5, 64))
    assert np.array_equal(flat, as_square)
    assert np.allclose(as_images((digits * 255 / 16).astype(np.uint8)), as_square, atol=1 / 255)
    assert np.array_equal(as_images(torch.from_numpy(digits / 16.0)), as_square)
    for bad, message in ((np.zeros((5, 10)), "flattened square"), (np.zeros((5, 4, 6)), "square images"),
                         (-np.ones((5, 8, 8)), "values in")):
        with pytest.raises(DataError, match=message):
            as_images(bad)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    X = load_digits().images[:120] / 16.0
    estimator = InvariantClustering(n_clusters=3, encoder="mlp", epochs=1, pretrain_epochs=1, graph=False,
                                    batch_size=40, num_threads=1, device="cpu",
                                    settings={"loss.n_augment": 1, "training.min_steps_per_epoch": 1,
                                              "model.z_style_dim": 2},
                                    run_dir=tmp_path_factory.mktemp("estimator"))
    labels = estimator.fit_predict(X)
    return estimator, X, labels


def test_a_fitted_estimator_answers_every_question(fitted):
    estimator, X, labels = fitted
    n = len(X)
    assert labels.shape == (n,) and set(labels) <= {0, 1, 2}
    assert np.array_equal(estimator.predict(X), labels) and np.array_equal(estimator.labels_, labels)
    proba = estimator.predict_proba(X)
    assert proba.shape == (n, 3) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert estimator.poses_.shape == (n, 1) and np.allclose(estimator.poses(X), estimator.poses_, atol=1e-6)
    matrices = estimator.pose_matrices(X[:4])
    assert matrices.shape == (4, 3, 3) and np.allclose(matrices[:, 0, 0], np.cos(estimator.poses_[:4, 0]), atol=1e-5)
    assert estimator.canonical_images(X[:4]).shape == (4, 1, 8, 8) == estimator.canonical_[:4].shape
    assert estimator.transform(X[:4]).shape == (4, 10)
    averages = estimator.class_averages()
    assert averages.sizes.sum() == n and averages.averages.shape == (3, 1, 8, 8)
    with pytest.raises(DataError, match="fitted on"):
        estimator.predict(np.zeros((2, 12, 12)))


def test_the_written_config_reproduces_the_run(fitted, tmp_path):
    estimator, X, labels = fitted
    path = estimator.write_config(tmp_path / "estimator.yaml")
    config = load_config(path)
    assert config.prior.n_components == 3 and config.training.epochs == 1
    assert np.allclose(np.load(config.data.path), X.astype(np.float32))
    assert Path(config.training.out_dir) == Path(estimator.run_dir_)


def test_fitting_is_deterministic_and_clone_starts_unfitted(fitted, tmp_path):
    estimator, X, labels = fitted
    again = clone(estimator).set_params(run_dir=tmp_path / "again")
    with pytest.raises(NotFittedError):
        again.predict(X)
    assert np.array_equal(again.fit_predict(X), labels)
    assert np.allclose(again.poses_, estimator.poses_, atol=1e-6)
