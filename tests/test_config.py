"""Config files: every ready config validates; every bad one gets its clear message and exit 2."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import fake_plugins
from mcvae_framework import ConfigError, load_config, validate_config
from mcvae_framework.cli import cli
from mcvae_framework.config.experiment import apply_overrides, config_to_dict, read_config_file

ROOT = Path(__file__).resolve().parent.parent
#: ready configs; a template (first line "# template: ...") names a file the user supplies
CONFIGS = sorted((ROOT / "configs").glob("*.yaml")) + sorted((ROOT / "configs" / "templates").glob("*.yaml"))
TEMPLATES = [p for p in CONFIGS if p.read_text().startswith("# template:")]
READY = [p for p in CONFIGS if p not in TEMPLATES]
BAD = sorted((Path(__file__).parent / "bad_configs").glob("*.*"))


def expected_fragment(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path} must start with '# expect: <message fragment>'"
    return first[len("# expect: "):]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "mcvae_framework.cli", *args], capture_output=True, text=True)


def test_there_are_ready_configs():
    assert len(READY) >= 5


@pytest.mark.parametrize("path", READY, ids=[p.name for p in READY])
def test_ready_config_validates(path):
    config = load_config(path)
    # the resolved config is itself a valid config (what `mcvae train` stores in config.json)
    assert config_to_dict(validate_config(config_to_dict(config))) == config_to_dict(config)


def test_cli_validates_all_ready_configs():
    result = run_cli("config", "validate", *map(str, READY))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ok ") == len(READY)


@pytest.mark.parametrize("path", BAD, ids=[p.name for p in BAD])
def test_bad_config_gets_clear_message_and_exit_2(path):
    result = run_cli("config", "validate", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert str(path) in result.stderr  # names the file
    assert expected_fragment(path) in result.stderr


def test_unknown_group_tag_lists_known_tags(tmp_path):
    text = (ROOT / "configs" / "quickstart.yaml").read_text()
    data = yaml.safe_load(text)
    data["group"] = {"type": "nope"}
    bad = tmp_path / "nope.yaml"
    bad.write_text(yaml.safe_dump(data))
    result = run_cli("config", "validate", str(bad))
    assert result.returncode == 2
    assert "unknown group type 'nope'" in result.stderr
    for tag in ("so2", "se2", "scale_rotation", "sim2"):
        assert tag in result.stderr


def test_missing_file_is_a_config_error(tmp_path):
    result = run_cli("config", "validate", str(tmp_path / "absent.yaml"))
    assert result.returncode == 2 and "file not found" in result.stderr


def test_overrides_parse_yaml_scalars_and_create_sections():
    data = apply_overrides({"training": {"epochs": 3}}, ["training.epochs=5", "loss.beta=0.5", "training.out_dir=runs/a b", "x.y=[1, 2]"])
    assert data == {"training": {"epochs": 5, "out_dir": "runs/a b"}, "loss": {"beta": 0.5}, "x": {"y": [1, 2]}}
    with pytest.raises(ConfigError, match="not of the form"):
        apply_overrides({}, ["training.epochs"])
    with pytest.raises(ConfigError, match="training.epochs is 3, not a section"):
        apply_overrides({"training": {"epochs": 3}}, ["training.epochs.x=1"])


def test_show_applies_overrides_and_fills_defaults():
    result = run_cli("config", "show", str(ROOT / "configs" / "quickstart.yaml"), "--set", "training.epochs=7", "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["training"]["epochs"] == 7
    assert list(shown)[:5] == ["data", "group", "encoder", "decoder", "prior"]
    assert "grad_clip" in shown["training"]  # a default the file did not write


def test_bad_override_exits_2():
    result = run_cli("config", "show", str(ROOT / "configs" / "quickstart.yaml"), "--set", "training.epochs=-1")
    assert result.returncode == 2 and "training.epochs" in result.stderr


def test_schema_lists_component_tags():
    result = run_cli("config", "schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert set(schema["properties"]) >= {"data", "group", "encoder", "decoder", "prior", "model", "loss", "training"}
    assert "so2" in result.stdout and "gmm" in result.stdout


def test_json_and_yaml_files_load_the_same(tmp_path):
    data = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())
    (tmp_path / "q.json").write_text(json.dumps(data))
    assert config_to_dict(load_config(tmp_path / "q.json")) == config_to_dict(load_config(ROOT / "configs" / "quickstart.yaml"))


def test_error_lists_every_problem_at_once(isolated_plugins):
    isolated_plugins.register(fake_plugins.AllKinds(), name="fake")
    bad = dict(fake_plugins.VALID, group={"type": "nope"}, encoder={"type": "fake_encoder", "width": 0})
    bad["training"] = {"epochs": 0}
    with pytest.raises(ConfigError) as info:
        validate_config(bad, source="exp.yaml")
    paths = [p for p, _ in info.value.problems]
    assert paths == ["group.type", "encoder.width", "training.epochs"]
    assert str(info.value).startswith("exp.yaml: invalid configuration")


def test_group_may_be_null_for_the_plain_baseline(isolated_plugins):
    isolated_plugins.register(fake_plugins.AllKinds(), name="fake")
    config = validate_config(dict(fake_plugins.VALID, group=None, loss={"mode": "plain"}))
    assert config.group is None


def test_cli_plugins_in_process(isolated_plugins):
    isolated_plugins.register(fake_plugins.AllKinds(), name="fake")
    result = CliRunner().invoke(cli, ["plugins", "--json"])
    assert result.exit_code == 0
    (info,) = json.loads(result.output)["plugins"]
    assert info["registers"]["prior"] == ["fake_prior", "other_prior"]
    text = CliRunner().invoke(cli, ["plugins"]).output
    assert "fake  (registered directly)" in text and "fake_group" in text


# ---------------------------------------------------------------- sections that cannot train together


SUPERVISED_WITHOUT_CANONICAL = {
    "data": {"type": "digits", "limit": 32}, "group": {"type": "so2"}, "encoder": {"type": "mlp"},
    "decoder": {"type": "mlp"}, "prior": {"type": "gmm", "n_components": 3}, "loss": {"mode": "supervised"},
    "training": {"epochs": 1, "device": "cpu", "progress": False},
}


def test_supervised_mode_without_canonical_images_is_refused_before_training(tmp_path):
    path = tmp_path / "supervised.yaml"
    path.write_text(yaml.safe_dump(SUPERVISED_WITHOUT_CANONICAL))
    for args in (["config", "validate", str(path)], ["train", str(path), "--out-dir", str(tmp_path / "run")]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, result.output
        assert str(path) in result.output and "loss.mode" in result.output and "`transform`" in result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()  # refused before the run folder was made
    fixed = {**SUPERVISED_WITHOUT_CANONICAL,
             "data": {"type": "digits", "limit": 32, "transform": {"group": "so2", "seed": 0}}}
    path.write_text(yaml.safe_dump(fixed))
    assert CliRunner().invoke(cli, ["config", "validate", str(path)]).exit_code == 0


def test_the_trainer_checks_a_dataset_it_is_given(tmp_path):
    from mcvae_framework import build
    from mcvae_framework.train.trainer import Trainer

    config = validate_config({**SUPERVISED_WITHOUT_CANONICAL, "training": {
        **SUPERVISED_WITHOUT_CANONICAL["training"], "out_dir": str(tmp_path / "run")}})
    data = build("data", config.data, split="train")
    with pytest.raises(ConfigError, match="loss.mode: 'supervised' learns from each image's canonical"):
        Trainer(config, train_dataset=data, test_dataset=data, console=False).run()


VARIANTS = [p for p in READY if "nothing else changes but the run folder" in p.read_text()]


def test_there_are_encoder_variants():
    assert len(VARIANTS) >= 2


@pytest.mark.parametrize("path", VARIANTS, ids=[p.name for p in VARIANTS])
def test_encoder_variant_differs_from_its_base_only_in_encoder_and_run_folder(path):
    # a variant's header promises a one-setting comparison; a setting added to the base
    # config later (as the pose-guidance term was) must reach the variant too
    header = path.read_text().split("data:")[0]
    base = ROOT / re.search(r"configs/[\w.-]+\.yaml", header).group(0)
    variant_dict, base_dict = (config_to_dict(load_config(p)) for p in (path, base))
    for config in (variant_dict, base_dict):
        config.pop("encoder")
        config["training"].pop("out_dir")
    assert variant_dict == base_dict, f"{path.name} has drifted from {base.name}"


def test_without_graph_switches_off_the_graph_and_the_terms_that_learn_from_it():
    from mcvae_framework.config.sections import GUIDED_TERMS, without_graph

    raw = read_config_file(ROOT / "configs" / "quickstart.yaml")
    assert raw["graph"]["enabled"] and raw["loss"]["self_label_weight"] > 0 and raw["loss"]["pose_guide_weight"] > 0
    off = without_graph(raw)
    assert off["graph"] == {**raw["graph"], "enabled": False}
    fields = [name for term in GUIDED_TERMS for name in term.fields]
    assert {"self_label_weight", "self_label_copies", "neighbour_weight", "pose_guide_weight"} <= set(fields)
    # the quickstart's self_label_target tunes the self-labelling term: null with it (0 is out of its range)
    assert raw["loss"]["self_label_target"] == 0.99
    assert off["loss"] == {**raw["loss"], **dict.fromkeys(fields, 0), "self_label_target": None}
    assert raw["graph"]["enabled"] and raw["loss"]["pose_guide_weight"] > 0  # the input is not changed
    validate_config(off, source="quickstart without its graph")
