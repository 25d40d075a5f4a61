"""Shared fixtures."""

from __future__ import annotations

import pytest

from mcvae_framework import plugins


@pytest.fixture
def isolated_plugins():
    """Run a test against a fresh, empty plugin manager; restore the process-wide one after."""
    pm = plugins.create_plugin_manager(load_entry_points=False)
    previous = plugins.set_plugin_manager(pm)
    try:
        yield pm
    finally:
        plugins.set_plugin_manager(previous)
