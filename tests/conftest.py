"""Shared fixtures."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

from mcvae_framework.config import plugins

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import volume_data  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def volume_data_of_the_ready_configs():
    """configs/so3_*.yaml read volumes that benchmarks/volume_data.py makes from a seed (too
    large to keep in git): write them once, where they are missing, before any test validates
    the ready configs."""
    volume_data.ensure_ready_data()


@pytest.fixture
def isolated_plugins():
    """Run a test against a fresh, empty plugin manager; restore the process-wide one after."""
    pm = plugins.create_plugin_manager(load_entry_points=False)
    previous = plugins.set_plugin_manager(pm)
    try:
        yield pm
    finally:
        plugins.set_plugin_manager(previous)


@pytest.fixture
def one_thread():
    """One torch thread: on a shared 2-core machine several threads per process spin-wait
    each other and make tiny models orders of magnitude slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def mrc_run(tmp_path_factory):
    """A run trained for one epoch on a tiny MRC particle stack (see tests/tiny_runs.py)."""
    from tiny_runs import mrc_run as make

    return make(tmp_path_factory.mktemp("mrc"))


@pytest.fixture(scope="session")
def folder_run(tmp_path_factory):
    """A run trained for one epoch on a tiny folder of PNGs whose names hold markup."""
    from tiny_runs import folder_run as make

    return make(tmp_path_factory.mktemp("folder"))


@pytest.fixture(scope="session")
def folder_page(folder_run):
    """``mcvae report --split all --members 30`` of :func:`folder_run`: its report.html."""
    from click.testing import CliRunner

    from mcvae_framework.cli import cli

    result = CliRunner().invoke(cli, ["report", str(folder_run), "--split", "all", "--members", "30"])
    assert result.exit_code == 0, result.output
    # a copy: other tests write the run's report.html again, for other splits
    return Path(shutil.copy(folder_run / "report.html", folder_run / "report_all.html"))


@pytest.fixture(scope="session")
def mrc_page(mrc_run):
    """``mcvae report --split all`` of :func:`mrc_run`: its report.html."""
    from click.testing import CliRunner

    from mcvae_framework.cli import cli

    result = CliRunner().invoke(cli, ["report", str(mrc_run), "--split", "all"])
    assert result.exit_code == 0, result.output
    return Path(shutil.copy(mrc_run / "report.html", mrc_run / "report_all.html"))
