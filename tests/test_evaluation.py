"""Metrics of mcvae_framework.report.evaluation against hand-made cases and scikit-learn."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from mcvae_framework import ConfigError, build
from mcvae_framework.interfaces import AffineGroup2D
from mcvae_framework.report.evaluation import (
    best_offset,
    canonical_metrics,
    clustering_metrics,
    hungarian_accuracy,
    json_safe,
    mod180,
    pose_metrics,
    relative_change,
    report_markdown,
    write_report,
)

#: the hand-written offset mean: fast, for the tests that are not about the mean's path
INTRINSIC = "intrinsic"

# ----------------------------------------------------------------- clustering


def test_permuted_labelling_scores_perfectly():
    labels = np.repeat(np.arange(5), 7)
    clusters = (labels * 3 + 2) % 5  # a bijection of the labels
    metrics = clustering_metrics(labels, clusters, n_clusters=5)
    assert metrics["accuracy"] == 1.0
    assert metrics["nmi"] == pytest.approx(1.0)
    assert metrics["ari"] == pytest.approx(1.0)
    assert metrics["cluster_to_label"] == {str((l * 3 + 2) % 5): l for l in range(5)}


def test_known_confusion_gives_known_accuracy():
    # label 0: 8 in cluster 1, 2 in cluster 0; label 1: all 10 in cluster 0 -> 18 / 20.
    labels = np.array([0] * 10 + [1] * 10)
    clusters = np.array([1] * 8 + [0] * 2 + [0] * 10)
    accuracy, mapping = hungarian_accuracy(labels, clusters)
    assert accuracy == pytest.approx(0.9)
    assert mapping == {1: 0, 0: 1}


def test_a_majority_vote_is_not_a_matching():
    # Both labels are mostly in cluster 0; a one-to-one matching may use cluster 0 once.
    labels = np.array([0] * 6 + [1] * 6)
    clusters = np.array([0] * 5 + [1] + [0] * 4 + [1] * 2)
    # best: cluster 0 -> label 0 (5) + cluster 1 -> label 1 (2) = 7, or 0 -> 1 (4) + 1 -> 0 (1) = 5
    assert hungarian_accuracy(labels, clusters)[0] == pytest.approx(7 / 12)


def test_surplus_clusters_count_as_wrong_and_sizes_include_empty_ones():
    labels = np.array([0, 0, 1, 1])
    clusters = np.array([0, 1, 2, 3])
    metrics = clustering_metrics(labels, clusters, n_clusters=6)
    assert metrics["accuracy"] == pytest.approx(0.5)
    assert metrics["cluster_sizes"] == [1, 1, 1, 1, 0, 0]
    assert metrics["clusters_used"] == 4
    assert metrics["n_classes"] == 2


def test_agrees_with_sklearn_and_with_a_brute_force_matching():
    rng = np.random.default_rng(3)
    for _ in range(5):
        labels = rng.integers(0, 4, size=200)
        clusters = np.where(rng.random(200) < 0.6, (labels + 1) % 4, rng.integers(0, 4, size=200))
        metrics = clustering_metrics(labels, clusters)
        assert metrics["nmi"] == pytest.approx(normalized_mutual_info_score(labels, clusters))
        assert metrics["ari"] == pytest.approx(adjusted_rand_score(labels, clusters))
        brute = max(np.mean(np.array(perm)[clusters] == labels) for perm in itertools.permutations(range(4)))
        assert metrics["accuracy"] == pytest.approx(brute)


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="differ in length"):
        hungarian_accuracy([0, 1, 2], [0, 1])


# ----------------------------------------------------------------------- pose


@pytest.fixture(scope="module")
def so2():
    return build("group", {"type": "so2"})


@pytest.fixture(scope="module")
def se2():
    return build("group", {"type": "se2"})


def _offset_poses(n_per_cluster, offsets, noise_rad, seed=0):
    """True angles in [-90, 90] deg and predictions off by a constant per cluster."""
    gen = torch.Generator().manual_seed(seed)
    clusters = np.repeat(np.arange(len(offsets)), n_per_cluster)
    true = (torch.rand(len(clusters), 1, generator=gen, dtype=torch.float64) - 0.5) * math.pi
    noise = noise_rad * torch.randn(len(clusters), 1, generator=gen, dtype=torch.float64)
    pred = true - torch.tensor(offsets, dtype=torch.float64)[clusters][:, None] + noise
    return pred, true, clusters


def test_per_cluster_offset_is_removed(so2):
    pred, true, clusters = _offset_poses(150, [0.5, -2.0, 3.0], noise_rad=0.0)
    report = pose_metrics(so2, pred, true, clusters, pose_mean=INTRINSIC)
    assert report["raw"]["rotation_deg"]["median"] > 20
    assert report["per_cluster_offset"]["rotation_deg"]["median"] < 1e-3
    assert report["per_cluster_offset"]["rotation_deg"]["mean"] < 1e-3
    recovered = [report["offsets"][str(c)][0] for c in range(3)]
    assert recovered == pytest.approx([0.5, -2.0, 3.0], abs=1e-5)


def test_offset_removal_leaves_the_noise(so2):
    noise_deg = 4.0
    pred, true, clusters = _offset_poses(400, [1.0, -1.5], noise_rad=math.radians(noise_deg))
    aligned = pose_metrics(so2, pred, true, clusters, pose_mean=INTRINSIC)["per_cluster_offset"]["rotation_deg"]
    # median of |N(0, s)| is 0.674 s; a wrong offset would add to it
    assert aligned["median"] == pytest.approx(0.674 * noise_deg, rel=0.15)


def test_a_single_offset_for_all_images_is_not_enough_when_clusters_differ(so2):
    pred, true, clusters = _offset_poses(100, [0.0, 2.0], noise_rad=0.0)
    one_cluster = pose_metrics(so2, pred, true, np.zeros_like(clusters), pose_mean=INTRINSIC)["per_cluster_offset"]["rotation_deg"]
    per_cluster = pose_metrics(so2, pred, true, clusters, pose_mean=INTRINSIC)["per_cluster_offset"]["rotation_deg"]
    assert one_cluster["mean"] > 40 and per_cluster["mean"] < 1e-3


def test_half_turns_are_forgiven_only_modulo_180(so2):
    pred, true, clusters = _offset_poses(200, [0.7, -0.4], noise_rad=math.radians(2.0))
    flipped = torch.rand(len(pred), generator=torch.Generator().manual_seed(1)) < 0.3
    pred = pred + math.pi * flipped[:, None].double()
    report = pose_metrics(so2, pred, true, clusters, pose_mean=INTRINSIC)
    assert report["per_cluster_offset"]["rotation_deg"]["mean"] > 40  # 30% are 180 deg off
    assert report["per_cluster_offset_mod180"]["rotation_deg_mod180"]["median"] < 3
    assert report["per_cluster_offset_mod180"]["rotation_deg_mod180"]["mean"] < 3


def test_mod180_folds_half_turns():
    assert mod180(torch.tensor([0.0, 10.0, 90.0, 170.0, 180.0])).tolist() == [0.0, 10.0, 90.0, 10.0, 0.0]


def test_se2_offset_includes_translation(se2):
    gen = torch.Generator().manual_seed(0)
    n = 120
    clusters = np.repeat([0, 1], n // 2)
    true = torch.cat([(torch.rand(n, 1, generator=gen) - 0.5) * math.pi, (torch.rand(n, 2, generator=gen) - 0.5)], 1)
    true = true.double()
    offsets = torch.tensor([[0.4, 0.1, -0.2], [-1.0, 0.0, 0.3]], dtype=torch.float64)
    h = se2.exp(offsets)[clusters]
    pred = se2.log(se2.compose(se2.exp(true), se2.inverse(h)))  # g_true = g_pred h
    report = pose_metrics(se2, pred, true, clusters, pose_mean=INTRINSIC)
    assert report["raw"]["translation"]["mean"] > 0.05
    assert report["per_cluster_offset"]["translation"]["mean"] < 1e-5
    assert report["per_cluster_offset"]["rotation_deg"]["mean"] < 1e-4


def test_best_offset_ignores_a_minority_of_outliers(so2):
    pred, true, clusters = _offset_poses(200, [1.2], noise_rad=0.0)
    wild = torch.rand(len(pred), generator=torch.Generator().manual_seed(2)) < 0.25
    pred[wild] = (torch.rand(int(wild.sum()), 1, generator=torch.Generator().manual_seed(3)).double() - 0.5) * 6
    h = best_offset(so2, so2.exp(pred), so2.exp(true))
    assert so2.log(h[None])[0, 0].item() == pytest.approx(1.2, abs=1e-6)


# ----------------------------------------------- the geomstats path, group-agnostic errors


def _noisy_group_poses(group, offsets, n_per_cluster, noise, seed=0):
    """True poses from the group's own distribution and predictions ``g_true h_c^-1``
    perturbed by ``exp(noise * N(0, 1))``."""
    gen = torch.Generator().manual_seed(seed)
    clusters = np.repeat(np.arange(len(offsets)), n_per_cluster)
    true = group.sample(len(clusters), gen, dtype=torch.float64)
    h = group.exp(torch.tensor(offsets, dtype=torch.float64))[clusters]
    jitter = group.exp(noise * torch.randn(len(clusters), group.dim, generator=gen, dtype=torch.float64))
    pred = group.log(group.compose(group.compose(group.exp(true), group.inverse(h)), jitter))
    return pred, true, clusters


@pytest.mark.parametrize("tag, offsets", [("so2", [[0.6], [-2.5]]), ("se2", [[0.6, 0.1, -0.2], [-2.5, 0.0, 0.3]])])
def test_geomstats_offsets_give_the_same_median_errors_as_the_intrinsic_mean(tag, offsets):
    group = build("group", {"type": tag, "angle_deg": [-90, 90], **({"shift": 0.2} if tag == "se2" else {})})
    pred, true, clusters = _noisy_group_poses(group, offsets, 40, noise=math.radians(4.0))
    flipped = torch.rand(len(pred), generator=torch.Generator().manual_seed(1)) < 0.2
    pred[:, 0] = pred[:, 0] + math.pi * flipped.double()  # a symmetric shape's other orientation
    by = {path: pose_metrics(group, pred, true, clusters, pose_mean=path) for path in ("geomstats", "intrinsic")}
    space = "SpecialOrthogonal(2)" if tag == "so2" else "SpecialEuclidean(2)"
    assert by["geomstats"]["offset_mean"]["path"] == "geomstats"
    assert by["geomstats"]["offset_mean"]["method"].startswith(f"geomstats FrechetMean on {space}")
    assert by["intrinsic"]["offset_mean"]["path"] == "intrinsic"
    for block, key in (("per_cluster_offset", "rotation_deg"), ("per_cluster_offset_mod180", "rotation_deg_mod180")):
        a, b = by["geomstats"][block][key]["median"], by["intrinsic"][block][key]["median"]
        assert abs(a - b) <= 0.1, (block, a, b)
    assert by["geomstats"]["per_cluster_offset_mod180"]["rotation_deg_mod180"]["median"] < 5
    # the offsets themselves agree (SO(2): both are the bi-invariant mean)
    for c in ("0", "1"):
        assert abs(by["geomstats"]["offsets"][c][0] - by["intrinsic"]["offsets"][c][0]) < math.radians(0.1)
    # dispersion: the cluster's offsets spread like the noise (radians for the angle)
    for path in by:
        spread = by[path]["offset_dispersion"]
        assert set(spread["per_cluster"]) == {"0", "1"} and spread["median"] > 0


def test_auto_uses_geomstats_where_the_group_names_a_space(so2):
    pred, true, clusters = _offset_poses(12, [0.3], noise_rad=0.0)
    report = pose_metrics(so2, pred, true, clusters)
    assert report["offset_mean"]["path"] == "geomstats" and report["primary_error"] == "rotation_deg"
    assert report["offset_dispersion"]["median"] < 1e-6  # a perfect pose up to the offset
    text = report_markdown(json_safe({"pose": {k: v for k, v in report.items() if k != "_offsets"}}))
    assert "Offsets averaged by: geomstats FrechetMean on SpecialOrthogonal(2)" in text


def test_affine2_offsets_through_geomstats_exponential_barycenter():
    group = build("group", {"type": "affine2", "angle_deg": [-45, 45], "shift": 0.1})
    offsets = [[0.5, 0.1, 0.2, -0.1, 0.05, 0.0], [-1.0, -0.1, 0.0, 0.15, 0.0, -0.1]]
    pred, true, clusters = _noisy_group_poses(group, offsets, 30, noise=0.0)
    report = pose_metrics(group, pred, true, clusters)
    assert report["offset_mean"]["method"] == (
        "geomstats ExponentialBarycenter (group exponential barycenter) on GeneralLinear+(3)")
    aligned = report["per_cluster_offset"]
    assert set(aligned) == {"rotation_deg", "rotation_deg_mod180", "translation", "log_scale", "stretch"}
    assert max(v["median"] for k, v in aligned.items()) < 1e-6
    for c, expected in enumerate(offsets):
        assert report["offsets"][str(c)] == pytest.approx(expected, abs=1e-6)


class _Translations(AffineGroup2D):
    """Pure translations, without a geomstats space: the hand-written path serves it."""

    name = "translations_test"
    dim = 2
    coordinate_names = ("u1", "u2")

    def exp(self, tau):
        g = torch.eye(3, dtype=tau.dtype).repeat(len(tau), 1, 1)
        g[:, :2, 2] = tau
        return g

    def log(self, g):
        return g[:, :2, 2].clone()

    def sample(self, n, generator=None, *, dtype=None, device=None):
        return torch.rand(n, 2, generator=generator, dtype=dtype or torch.get_default_dtype()) - 0.5

    def log_prior(self, tau):
        return -0.5 * (tau**2).sum(-1)


def test_a_group_without_rotation_gets_no_rotation_error(tmp_path):
    group = _Translations()
    pred, true, clusters = _noisy_group_poses(group, [[0.2, 0.1], [-0.3, 0.0]], 30, noise=0.01)
    report = pose_metrics(group, pred, true, clusters)
    assert report["primary_error"] == "translation"
    assert set(report["raw"]) == set(report["per_cluster_offset"]) == {"translation"}
    assert "per_cluster_offset_mod180" not in report
    assert report["per_cluster_offset"]["translation"]["median"] < 0.03 < report["raw"]["translation"]["median"]
    assert report["offset_mean"] == {"path": "intrinsic", "method": report["offset_mean"]["method"],
                                     "reason": "the group names no geomstats space"}
    report.pop("_offsets")
    json_path, md_path = write_report({"pose": report}, tmp_path)
    assert "rotation" not in json_path.read_text() and "rotation" not in md_path.read_text()
    assert "| translation |" in md_path.read_text()
    # asking for geomstats where it cannot serve is a user error (the CLI prints it, exit 2)
    with pytest.raises(ConfigError, match="names no geomstats space") as info:
        pose_metrics(group, pred, true, clusters, pose_mean="geomstats")
    assert "translations_test" in str(info.value) and "intrinsic" in str(info.value)


# ------------------------------------------------------------------ canonical


def _blob(size=28):
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    # an asymmetric bump well inside the frame, so a rotation changes it
    return torch.exp(-((x - 0.3) ** 2 / 0.05 + (y + 0.1) ** 2 / 0.02))[None]


def test_canonical_error_after_moving_by_the_cluster_offset(so2):
    true_canonical = torch.stack([_blob()] * 6)
    clusters = np.array([0, 0, 0, 1, 1, 1])
    offsets = {0: so2.exp(torch.tensor([[math.pi / 2]]))[0], 1: so2.exp(torch.tensor([[-math.pi / 3]]))[0]}
    h = torch.stack([offsets[c] for c in clusters])
    decoded = so2.act(true_canonical, h)  # the model's canonical frame differs per cluster
    report = canonical_metrics(so2, decoded, true_canonical, clusters, offsets)
    assert report["mse"] > 1e-3
    assert report["mse_offset_aligned"] < 0.05 * report["mse"]


def test_canonical_error_without_offsets_is_plain_mse():
    a, b = torch.zeros(2, 1, 4, 4), torch.full((2, 1, 4, 4), 0.5)
    assert canonical_metrics(None, a, b) == {"mse": pytest.approx(0.25)}


# ----------------------------------------------------------------- invariance


def test_relative_change_is_zero_when_invariant_and_one_for_a_shuffle():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(2000, 5, generator=gen)
    assert relative_change(z, z) == 0.0
    shuffled = z[torch.randperm(len(z), generator=gen)]
    # E|z_i - z_j| / E|z_i - mean| = sqrt(2) for Gaussian-like clouds (chi ratio, 5 dims)
    assert relative_change(z, shuffled) == pytest.approx(math.sqrt(2), rel=0.08)
    # a shift by 0.01 of the typical radius along every one of the 5 axes
    shift = 0.01 * (z - z.mean(0)).norm(dim=1).mean()
    assert relative_change(z, z + shift) == pytest.approx(0.01 * math.sqrt(5), rel=1e-4)


# --------------------------------------------------------------------- report


def test_report_files_are_valid_json_and_markdown(tmp_path):
    report = {
        "run_dir": "runs/x", "split": "test", "n_images": 4, "accuracy": 0.5, "nmi": float("nan"), "ari": 0.1,
        "clustering": clustering_metrics([0, 0, 1, 1], [1, 1, 1, 0], n_clusters=3),
        "pose": {"raw": {"rotation_deg": {"median": 40.0, "mean": 50.0}},
                 "per_cluster_offset": {"rotation_deg": {"median": 4.0, "mean": 5.0}}},
        "elbo": {"loss": torch.tensor(12.5), "reconstruction": np.float32(10.0)},
    }
    json_path, md_path = write_report(report, tmp_path)
    loaded = json.loads(json_path.read_text())
    assert loaded["nmi"] is None and loaded["accuracy"] == 0.5
    assert loaded["elbo"] == {"loss": 12.5, "reconstruction": 10.0}
    text = md_path.read_text()
    assert "| 0.5 | - | 0.1 | 2 of 3 |" in text
    assert "| rotation_deg | 40 | 50 | 4 | 5 |" in text
    assert report_markdown(json_safe(report)) == text.rstrip("\n")
