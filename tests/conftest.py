"""Shared fixtures."""

from __future__ import annotations

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
