"""Plugin discovery, loading failures, duplicate tags, and the registry."""

from __future__ import annotations

import importlib
import textwrap

import pluggy
import pytest

import fake_plugins
from mcvae_framework import ConfigError, PluginError, build
from mcvae_framework.config import plugins
from mcvae_framework.hookspecs import HOOK_KINDS, KINDS
from mcvae_framework.config.registry import Registry, tag_of

THROWAWAY_MODULE = '''
from typing import Literal
from mcvae_framework import ComponentConfig, hookimpl

class ThrowawayGroupConfig(ComponentConfig):
    type: Literal["throwaway_group"] = "throwaway_group"

@hookimpl
def mcvae_register_groups(register):
    register(ThrowawayGroupConfig, lambda config: ("built", config.type))
'''


def make_distribution(root, dist_name, entry_name, module_name, module_source):
    """A real installed distribution: a module plus a *.dist-info with entry_points.txt."""
    (root / f"{module_name}.py").write_text(textwrap.dedent(module_source))
    info = root / f"{dist_name.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[mcvae_framework]\n{entry_name} = {module_name}\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(plugins.DISABLE_AUTOLOAD_ENV, raising=False)
    monkeypatch.delenv(plugins.ONLY_PLUGINS_ENV, raising=False)
    importlib.invalidate_caches()
    return tmp_path


def test_entry_point_plugin_is_discovered_and_builds(site):
    make_distribution(site, "throwaway-plugin", "throwaway", "throwaway_mod", THROWAWAY_MODULE)
    pm = plugins.create_plugin_manager()
    assert pm.has_plugin("throwaway")
    assert pm.registry.get("group", "throwaway_group").plugin == "throwaway"
    info = {i.name: i for i in pm.plugin_infos()}["throwaway"]
    assert (info.distribution, info.version) == ("throwaway-plugin", "1.2.3")
    assert info.registers == {"group": ["throwaway_group"]}
    assert info.hooks == ["mcvae_register_groups"]
    previous = plugins.set_plugin_manager(pm)
    try:
        assert build("group", {"type": "throwaway_group"}) == ("built", "throwaway_group")
    finally:
        plugins.set_plugin_manager(previous)


def test_builtin_plugins_load_through_entry_points(monkeypatch):
    monkeypatch.delenv(plugins.DISABLE_AUTOLOAD_ENV, raising=False)
    monkeypatch.delenv(plugins.ONLY_PLUGINS_ENV, raising=False)
    pm = plugins.create_plugin_manager()
    names = {i.name: i for i in pm.plugin_infos()}
    for name in ("builtin-groups", "builtin-priors", "builtin-networks", "builtin-datasets"):
        assert names[name].distribution == "mcvae-framework"
    assert not pm.failed


def test_broken_plugin_warns_and_others_still_load(site):
    make_distribution(site, "broken-plugin", "broken", "broken_mod", "raise RuntimeError('boom at import')\n")
    make_distribution(site, "throwaway-plugin", "throwaway", "throwaway_mod", THROWAWAY_MODULE)
    with pytest.warns(plugins.PluginLoadWarning, match=r"'broken' from broken-plugin 1\.2\.3.*boom at import"):
        pm = plugins.create_plugin_manager()
    assert "broken" in pm.failed and not pm.has_plugin("broken")
    assert pm.has_plugin("throwaway")
    assert "throwaway_group" in pm.registry.tags("group")


def test_autoload_can_be_disabled_and_limited(site, monkeypatch):
    make_distribution(site, "throwaway-plugin", "throwaway", "throwaway_mod", THROWAWAY_MODULE)
    monkeypatch.setenv(plugins.DISABLE_AUTOLOAD_ENV, "1")
    assert plugins.create_plugin_manager().list_name_plugin() == []
    monkeypatch.delenv(plugins.DISABLE_AUTOLOAD_ENV)
    monkeypatch.setenv(plugins.ONLY_PLUGINS_ENV, "throwaway")
    assert [name for name, _ in plugins.create_plugin_manager().list_name_plugin()] == ["throwaway"]


def test_duplicate_tags_name_both_plugins(isolated_plugins):
    isolated_plugins.register(fake_plugins.AllKinds(), name="first-plugin")
    isolated_plugins.register(fake_plugins.DuplicatePrior(), name="second-plugin")
    with pytest.raises(PluginError, match=r"prior tag 'fake_prior': 'first-plugin' and 'second-plugin'"):
        isolated_plugins.registry


def test_misspelled_hook_is_caught():
    pm = plugins.create_plugin_manager(load_entry_points=False)
    pm.register(fake_plugins.Misspelled(), name="typo")
    with pytest.raises(pluggy.PluginValidationError, match="mcvae_register_group"):
        pm.check_pending()


def test_registering_a_plugin_rebuilds_the_registry(isolated_plugins):
    assert isolated_plugins.registry.tags("prior") == []
    isolated_plugins.register(fake_plugins.AllKinds(), name="fake")
    assert isolated_plugins.registry.tags("prior") == ["fake_prior", "other_prior"]


def test_every_kind_has_exactly_one_hook():
    assert sorted(HOOK_KINDS.values()) == sorted(KINDS)


def test_config_class_needs_a_single_literal_tag():
    from mcvae_framework import ComponentConfig

    class NoTag(ComponentConfig):
        width: int = 3

    with pytest.raises(PluginError, match="must declare `type: Literal"):
        tag_of(NoTag)
    assert tag_of(fake_plugins.FakePriorConfig) == "fake_prior"
    with pytest.raises(PluginError, match="not callable"):
        Registry().add("prior", fake_plugins.FakePriorConfig, "not a function", plugin="p")


def test_build_passes_context_and_validates(isolated_plugins):
    isolated_plugins.register(fake_plugins.AllKinds(), name="fake")
    built = build("prior", {"type": "fake_prior", "n_components": 4}, dim=7)
    assert built["config"].n_components == 4 and built["context"] == {"dim": 7}
    with pytest.raises(ConfigError, match=r"prior\.n_components: Input should be greater than or equal to 1"):
        build("prior", {"type": "fake_prior", "n_components": 0}, dim=7)
    with pytest.raises(ConfigError, match="known prior types: fake_prior, other_prior"):
        build("prior", {"type": "nope"}, dim=7)
    with pytest.raises(PluginError, match="unknown component kind 'priors'"):
        build("priors", {"type": "fake_prior"})


def test_a_hook_that_raises_is_reported_with_its_plugin(isolated_plugins):
    from mcvae_framework import hookimpl

    class Exploding:
        @hookimpl
        def mcvae_register_priors(self, register):
            raise KeyError("oops")

    isolated_plugins.register(Exploding(), name="exploding")
    with pytest.raises(PluginError, match="plugin 'exploding' failed in mcvae_register_priors: KeyError"):
        isolated_plugins.registry
