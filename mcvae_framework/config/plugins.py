"""The plugin manager: entry points, enable/disable, listing, and the registry it fills.

Nothing is loaded at import time. The first call to :func:`plugin_manager` (or
:func:`current_registry`) loads every distribution's ``mcvae_framework`` entry points -- our own
built-ins included, through the same mechanism -- unless ``MCVAE_DISABLE_PLUGIN_AUTOLOAD=1``.
``MCVAE_PLUGINS=a,b`` loads only the named entry points. Tests build a fresh manager
with :func:`create_plugin_manager` and register plugin objects directly.
"""

from __future__ import annotations

import importlib.metadata
import os
import warnings
from dataclasses import dataclass, field

import pluggy

from .. import hookspecs
from ..errors import PluginError
from .registry import Registry

ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME
DISABLE_AUTOLOAD_ENV = "MCVAE_DISABLE_PLUGIN_AUTOLOAD"
ONLY_PLUGINS_ENV = "MCVAE_PLUGINS"


class PluginLoadWarning(UserWarning):
    """A third-party plugin failed to import; the others still load."""


@dataclass
class PluginInfo:
    name: str
    distribution: str | None
    version: str | None
    hooks: list[str] = field(default_factory=list)
    registers: dict[str, list[str]] = field(default_factory=dict)


class McvaePluginManager(pluggy.PluginManager):
    """A pluggy manager that remembers which distribution each plugin came from and
    owns the registry its hooks fill."""

    def __init__(self):
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.distributions: dict[str, importlib.metadata.Distribution] = {}
        self.failed: dict[str, str] = {}
        self._registry: Registry | None = None

    def register(self, plugin, name=None):
        self._registry = None  # a new plugin invalidates the registry built so far
        return super().register(plugin, name=name)

    def unregister(self, plugin=None, name=None):
        self._registry = None
        return super().unregister(plugin=plugin, name=name)

    def load_entry_points(self, only: list[str] | None = None) -> None:
        """Import and register every ``mcvae_framework`` entry point.

        A plugin that fails to import is reported as a :class:`PluginLoadWarning`
        naming its distribution and the error; loading goes on with the others.
        """
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if only is not None and ep.name not in only:
                continue
            if self.has_plugin(ep.name) or self.is_blocked(ep.name):
                continue
            dist = ep.dist
            origin = f"{dist.name} {dist.version}" if dist is not None else "an unknown distribution"
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken plugin must not take the others down
                self.failed[ep.name] = f"{type(exc).__name__}: {exc}"
                warnings.warn(
                    f"mcvae plugin {ep.name!r} from {origin} failed to import and was "
                    f"skipped: {type(exc).__name__}: {exc}",
                    PluginLoadWarning,
                    stacklevel=2,
                )
                continue
            try:
                self.register(plugin, name=ep.name)
            except ValueError as exc:  # two distributions chose the same entry-point name
                self.failed[ep.name] = str(exc)
                warnings.warn(
                    f"mcvae plugin {ep.name!r} from {origin} was skipped: another plugin "
                    f"already uses that name ({exc})",
                    PluginLoadWarning,
                    stacklevel=2,
                )
                continue
            if dist is not None:
                self.distributions[ep.name] = dist
        # A misspelled hook name (e.g. `mcvae_register_group`) is an error, not a no-op.
        self.check_pending()

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = self._build_registry()
        return self._registry

    def _build_registry(self) -> Registry:
        registry = Registry()
        for hook_name, kind in hookspecs.HOOK_KINDS.items():
            caller = getattr(self.hook, hook_name)
            # Called one implementation at a time so that each registration knows its
            # plugin: duplicate tags are reported with both plugins' names.
            for impl in caller.get_hookimpls():  # registration order

                def register(config_class, factory, _kind=kind, _plugin=impl.plugin_name):
                    registry.add(_kind, config_class, factory, plugin=_plugin)

                try:
                    impl.function(register)
                except PluginError:
                    raise
                except Exception as exc:
                    raise PluginError(
                        f"plugin {impl.plugin_name!r} failed in {hook_name}: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
        return registry

    def plugin_infos(self) -> list[PluginInfo]:
        infos = []
        registry = self.registry
        for name, plugin in sorted(self.list_name_plugin(), key=lambda item: item[0]):
            dist = self.distributions.get(name)
            hooks = sorted(
                h.name for h in (self.get_hookcallers(plugin) or []) if h.name in hookspecs.HOOK_KINDS
            )
            infos.append(
                PluginInfo(
                    name=name,
                    distribution=dist.name if dist is not None else None,
                    version=dist.version if dist is not None else None,
                    hooks=hooks,
                    registers=registry.by_plugin(name),
                )
            )
        return infos


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def create_plugin_manager(load_entry_points: bool | None = None) -> McvaePluginManager:
    """A fresh manager. By default it loads entry points unless the environment says not to."""
    pm = McvaePluginManager()
    if load_entry_points is None:
        load_entry_points = not _env_flag(DISABLE_AUTOLOAD_ENV)
    if load_entry_points:
        only = os.environ.get(ONLY_PLUGINS_ENV)
        names = [n.strip() for n in only.split(",") if n.strip()] if only else None
        pm.load_entry_points(only=names)
    return pm


_manager: McvaePluginManager | None = None


def plugin_manager() -> McvaePluginManager:
    """The process-wide plugin manager, created (and entry points loaded) on first use."""
    global _manager
    if _manager is None:
        _manager = create_plugin_manager()
    return _manager


def set_plugin_manager(pm: McvaePluginManager | None) -> McvaePluginManager | None:
    """Install ``pm`` as the process-wide manager (``None`` forgets it so the next call
    reloads). Returns the previous one; tests use this to isolate themselves."""
    global _manager
    previous, _manager = _manager, pm
    return previous


def current_registry() -> Registry:
    """The registry of the process-wide plugin manager (loading plugins on first use)."""
    return plugin_manager().registry
