"""The README: its config block is configs/quickstart.yaml, and every command in its
bash blocks runs -- the `mcvae` commands here (verbatim, on configs shrunk to seconds), the install,
test and docs commands in CI (.ci/run)."""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from mcvae_framework.cli import cli

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
#: the README's `mcvae` commands run verbatim on copies of configs/ shrunk to seconds.
SHRINK = ["data.limit=40", "training.epochs=1", "loss.pretrain_epochs=1", "training.batch_size=16",
          "training.progress=false", "training.eval_batch_size=64", "training.min_steps_per_epoch=0"]


def shrunk_configs(folder: Path) -> None:
    import yaml

    from mcvae_framework.config.experiment import apply_overrides, read_config_file

    folder.mkdir()
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        data = read_config_file(path)
        (folder / path.name).write_text(yaml.safe_dump(apply_overrides(data, SHRINK, str(path))))


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", README, re.S | re.M)


def commands(block: str) -> list[list[str]]:
    """Each command of a bash block: comments dropped, `a && b` split."""
    out = []
    for line in block.splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            out += [shlex.split(part) for part in line.split("&&")]
    return out


def test_the_readme_config_block_is_the_quickstart_config():
    quickstart = (ROOT / "configs" / "quickstart.yaml").read_text(encoding="utf-8").strip()
    assert quickstart in [b.strip() for b in blocks("yaml")], (
        "README.md must show configs/quickstart.yaml verbatim in a ```yaml block"
    )


def test_the_install_test_and_docs_commands_run_in_ci():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    ci_extras = set(re.search(r'pip install -q -e "\.\[([a-z,]+)\]"', ci).group(1).split(","))
    others = [c for b in blocks("bash") for c in commands(b) if c[0] != "mcvae"]
    assert others, "the README lost its install and test commands"
    for command in others:
        if command[:3] == ["pip", "install", "-e"]:
            extras = re.fullmatch(r"\.(?:\[([a-z,]+)\])?", command[3])
            assert extras, command
            assert set(filter(None, (extras.group(1) or "").split(","))) <= ci_extras, command
        elif command[:3] == ["python", "-m", "pytest"]:
            assert "python -m pytest" in ci
        elif command[:2] == ["mkdocs", "build"]:
            assert "mkdocs build --strict" in ci
        else:
            pytest.fail(f"README command {' '.join(command)!r} runs neither here nor in .ci/run")


def test_every_mcvae_command_of_the_readme_runs(tmp_path, monkeypatch):
    """Block by block, as a reader would: a block that trains afresh starts in an empty
    folder, a block that goes on (--resume, --overwrite) finds the previous block's runs."""
    previous = None
    ran = 0
    for index, block in enumerate(blocks("bash")):
        mcvae = [c[1:] for c in commands(block) if c[0] == "mcvae"]
        if not mcvae:
            continue
        cwd = tmp_path / f"block{index}"
        cwd.mkdir()
        shrunk_configs(cwd / "configs")
        first_train = next((c for c in mcvae if c[0] == "train"), None)
        goes_on = first_train is None or "--resume" in first_train or "--overwrite" in first_train
        if goes_on and previous is not None and (previous / "runs").is_dir():
            shutil.copytree(previous / "runs", cwd / "runs")
        monkeypatch.chdir(cwd)
        for args in mcvae:
            args = [a for arg in args for a in (sorted(glob.glob(arg)) if "*" in arg else [arg])]
            result = CliRunner().invoke(cli, args)
            assert result.exit_code == 0, (f"`mcvae {' '.join(args)}` exited {result.exit_code}:\n"
                                           f"{result.output}\n{result.exception!r}")
            ran += 1
        previous = cwd
    assert ran >= 10
    assert (previous / "runs" / "quickstart" / "tensorboard").is_dir()
    assert os.listdir(tmp_path / "block2" / "runs" / "quickstart" / "predictions") == ["quickstart.csv"]
