"""Every user-fixable mistake documented in docs/cli.md exits with code 2 and one message
naming the file (or folder), the field or option, and the fix -- never a traceback."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from mcvae_framework.cli import cli

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {
    "data": {"type": "digits", "limit": 64, "transform": {"group": "so2", "seed": 0, "canvas": 8}},
    "group": {"type": "so2"},
    "encoder": {"type": "mlp"},
    "decoder": {"type": "mlp"},
    "prior": {"type": "gmm", "n_components": 2},
    "model": {"z_cluster_dim": 2, "z_style_dim": 1},
    "loss": {"mode": "unsupervised", "n_augment": 1},
    "training": {"epochs": 1, "batch_size": 32, "device": "cpu", "progress": False},
}


def documented_mistakes() -> list[str]:
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    table = text.split("The mistakes answered with exit code 2", 1)[1].split("\n\n", 2)[1]
    return [row.split("|")[1].strip() for row in table.splitlines()[2:] if row.startswith("|")]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from mcvae_framework.train.trainer import Trainer

    out = tmp_path_factory.mktemp("run")
    Trainer(CONFIG, out_dir=out, console=False).run()
    return out


def write(tmp_path, config=None, name="experiment.yaml", text=None):
    path = tmp_path / name
    path.write_text(text if text is not None else yaml.safe_dump(config))
    return str(path)


def with_(**changes):
    config = json.loads(json.dumps(CONFIG))
    for dotted, value in changes.items():
        node = config
        *parents, last = dotted.split("__")
        for part in parents:
            node = node[part]
        if value is None:
            del node[last]
        else:
            node[last] = value
    return config


def case_malformed_yaml(tmp_path, run_dir):
    f = write(tmp_path, text="data: {type: digits\nencoder: [")
    return ["config", "validate", f], [f, "malformed YAML", "line"]


def case_unknown_type(tmp_path, run_dir):
    f = write(tmp_path, with_(encoder__type="cnn"))
    return ["config", "validate", f], [f, "encoder.type", "known encoder types: conv, mlp"]


def case_missing_section(tmp_path, run_dir):
    f = write(tmp_path, with_(decoder=None))
    return ["train", f, "--out-dir", str(tmp_path / "r")], [f, "decoder: required section is missing",
                                                            "known decoder types"]


def case_misspelled_field(tmp_path, run_dir):
    f = write(tmp_path, with_(training__epoch=3))
    return ["config", "show", f], [f, "training.epoch", "did you mean `epochs`"]


def case_invalid_value(tmp_path, run_dir):
    f = write(tmp_path, with_(training__lr=-1))
    return ["config", "validate", f], [f, "training.lr", "greater than 0", "-1"]


def case_guided_term_without_graph(tmp_path, run_dir):
    f = write(tmp_path, with_(loss__neighbour_weight=5))  # CONFIG has no graph section: the graph is off
    return ["train", f, "--out-dir", str(tmp_path / "r")], [f, "loss.neighbour_weight > 0", "graph.enabled: true",
                                                            "loss.neighbour_weight: 0"]


def case_too_few_images(tmp_path, run_dir):
    config = with_(data__limit=8, prior__n_components=10)
    config["graph"] = {"enabled": True}
    f = write(tmp_path, config)
    return ["config", "validate", f], [f, "data: 8 training images are too few for the invariant graph",
                                       "graph.neighbours (5)", "at least 11 images"]


def case_malformed_set(tmp_path, run_dir):
    f = write(tmp_path, CONFIG)
    return ["config", "show", f, "--set", "training.epochs"], [f, "--set", "section.field=value"]


def case_missing_data(tmp_path, run_dir):
    f = write(tmp_path, with_(data={"type": "image_folder", "path": "my_images"}))
    return ["train", f, "--out-dir", str(tmp_path / "r")], [f, "data.path", str(tmp_path / "my_images"),
                                                            "config file's folder"]


def case_run_folder_holds_a_run(tmp_path, run_dir):
    f = write(tmp_path, CONFIG)
    return ["train", f, "--out-dir", str(run_dir)], [str(run_dir), "already holds a run", "--resume",
                                                      "--overwrite", "--out-dir"]


def case_resume_without_checkpoint(tmp_path, run_dir):
    f = write(tmp_path, CONFIG)
    return ["train", f, "--out-dir", str(tmp_path / "fresh"), "--resume"], [str(tmp_path / "fresh"), "--resume",
                                                                           "last.pt"]


def case_resume_another_model(tmp_path, run_dir):
    f = write(tmp_path, with_(model__z_cluster_dim=5))
    return ["train", f, "--out-dir", str(run_dir), "--resume"], ["model.z_cluster_dim", "config.json", "--out-dir"]


def case_not_a_run_folder(tmp_path, run_dir):
    return ["evaluate", str(tmp_path)], [str(tmp_path), "not a run folder", "last.pt"]


def case_no_best(tmp_path, run_dir):
    # the tiny run has no test loss below its first... it has best.pt; a copy without it has not
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "checkpoints" / "best.pt").unlink()
    f = write(tmp_path, CONFIG)
    return ["predict", str(copy), "--data", f, "--checkpoint", "best"], [str(copy), "best.pt", "last.pt",
                                                                         "--checkpoint last"]


def damaged_copy(tmp_path, run_dir, *names):
    """A copy of the run with the named checkpoints truncated."""
    import shutil

    copy = tmp_path / "damaged"
    shutil.copytree(run_dir, copy)
    for name in names:
        path = copy / "checkpoints" / name
        path.write_bytes(path.read_bytes()[:2000])
    return copy


def case_damaged_checkpoint(tmp_path, run_dir):
    copy = damaged_copy(tmp_path, run_dir, "last.pt")
    last = copy / "checkpoints" / "last.pt"
    return ["evaluate", str(copy)], [str(last), "truncated", str(copy / "checkpoints" / "previous.pt"), "--resume"]


def case_unknown_output_format(tmp_path, run_dir):
    f = write(tmp_path, CONFIG)
    out = tmp_path / "pred.xlsx"
    return ["predict", str(run_dir), "--data", f, "--out", str(out)], [str(out), "--out", ".csv", ".parquet"]


def case_wrong_image_shape(tmp_path, run_dir):
    arrays = tmp_path / "big.npy"
    np.save(arrays, np.zeros((3, 20, 20), dtype=np.uint8))
    return ["predict", str(run_dir), "--data", str(arrays)], [str(arrays), "(1, 20, 20)", "(1, 8, 8)", "resize"]


def case_unknown_data_kind(tmp_path, run_dir):
    other = tmp_path / "images.txt"
    other.write_text("a.png\n")
    return ["predict", str(run_dir), "--data", str(other)], [str(other), "--data", "folder of images"]


CASES = {
    "malformed YAML or JSON": case_malformed_yaml,
    "unknown `type` tag": case_unknown_type,
    "missing section": case_missing_section,
    "misspelled field": case_misspelled_field,
    "invalid value": case_invalid_value,
    "too few images for the graph or the prior": case_too_few_images,
    "graph-guided loss term without the graph": case_guided_term_without_graph,
    "malformed `--set`": case_malformed_set,
    "missing data file or folder": case_missing_data,
    "run folder already holds a run": case_run_folder_holds_a_run,
    "`--resume` without a checkpoint": case_resume_without_checkpoint,
    "`--resume` with another model's config": case_resume_another_model,
    "not a run folder": case_not_a_run_folder,
    "no `best.pt` in the run": case_no_best,
    "damaged checkpoint": case_damaged_checkpoint,
    "unknown output format": case_unknown_output_format,
    "images of another shape than the model's": case_wrong_image_shape,
    "`--data` of an unknown kind": case_unknown_data_kind,
}


def test_every_documented_mistake_has_a_case():
    assert documented_mistakes() == list(CASES), "docs/cli.md's list of exit-2 mistakes and this test differ"


@pytest.mark.parametrize("mistake", list(CASES))
def test_each_documented_mistake_exits_2_with_a_message(mistake, tmp_path, run_dir):
    args, wanted = CASES[mistake](tmp_path, run_dir)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, (mistake, result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    message = " ".join(result.output.split())
    for piece in wanted:
        assert " ".join(piece.split()) in message, (mistake, piece, result.output)
    assert re.search(r"^Error: |^Usage: ", result.output, re.M), result.output


def test_a_guided_term_without_the_graph_is_refused_by_config_validate_too(tmp_path):
    f = write(tmp_path, with_(loss__neighbour_weight=5))
    result = CliRunner().invoke(cli, ["config", "validate", f])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "loss.neighbour_weight > 0 learns from the invariant graph's neighbours" in " ".join(result.output.split())


@pytest.mark.parametrize("command", ["predict", "plot", "train --resume"])
def test_a_damaged_checkpoint_is_refused_by_every_command(command, tmp_path, run_dir):
    if command == "train --resume":  # with last.pt alone damaged, --resume goes on from previous.pt
        copy = damaged_copy(tmp_path, run_dir, "last.pt", "previous.pt")
        args = ["train", write(tmp_path, CONFIG), "--out-dir", str(copy), "--resume"]
    else:
        copy = damaged_copy(tmp_path, run_dir, "last.pt")
        args = [command, str(copy)] + (["--data", write(tmp_path, CONFIG)] if command == "predict" else [])
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output and "truncated" in result.output
    assert str(copy / "checkpoints" / "last.pt") in " ".join(result.output.split())


def test_train_resume_goes_on_from_the_previous_checkpoint_when_last_is_damaged(tmp_path, run_dir):
    copy = damaged_copy(tmp_path, run_dir, "last.pt")
    config = write(tmp_path, with_(training__epochs=2))
    result = CliRunner().invoke(cli, ["train", config, "--out-dir", str(copy), "--resume"])
    assert result.exit_code == 0, (result.output, result.exception)
    said = " ".join(result.output.split())
    assert f"{copy / 'checkpoints' / 'last.pt'} cannot be read" in said  # on stderr
    assert "resuming from the previous checkpoint" in (copy / "train.log").read_text()
    from mcvae_framework.runtime.checkpoint import load_checkpoint

    assert load_checkpoint(copy / "checkpoints" / "last.pt")["epoch"] == 2


@pytest.mark.parametrize("graph", [True, False])
def test_too_few_images_are_refused_before_the_run_folder_is_made(graph, tmp_path):
    config = with_(data__limit=8, prior__n_components=10)
    config["graph"] = {"enabled": graph}
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", write(tmp_path, config), "--out-dir", str(out)])
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output and not out.exists()
    said = " ".join(result.output.split())
    assert "8 training images are too few for the " + ("invariant graph" if graph else "prior's 10 components") in said
    # enough images: the same config validates
    config["data"]["limit"] = 40
    assert CliRunner().invoke(cli, ["config", "validate", write(tmp_path, config)]).exit_code == 0


def test_a_refused_train_leaves_the_run_alone(run_dir, tmp_path):
    files = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    args, _ = case_run_folder_holds_a_run(tmp_path, run_dir)
    assert CliRunner().invoke(cli, args).exit_code == 2
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == files
