"""mcvae_framework: Multi-Clustering Equivariant VAEs, assembled from plugins.

Public API::

    from mcvae_framework import load_config, build, plugin_manager, hookimpl

Plugins import only from here, :mod:`mcvae_framework.interfaces`, :mod:`mcvae_framework.errors`,
:mod:`mcvae_framework.testing` and :mod:`mcvae_framework.geomstats_bridge` (see
docs/architecture.md; ``tests/test_architecture.py`` checks it).
"""

from __future__ import annotations

from .config.components import build
from .config.experiment import component_config, load_config, validate_config
from .errors import CheckpointError, ConfigError, DataError, McvaeError, PluginError, RunFolderError, TrainingError
from .hookspecs import hookimpl
from .model.mcevae import MCEVAE, build_model
from .config.plugins import create_plugin_manager, plugin_manager
from .config.registry import ComponentConfig

__version__ = "0.1.0"
#: The version of the plugin API: the hooks, the interfaces of ``mcvae_framework.interfaces``
#: (dataset helpers included), the contract kits and the errors a plugin meets. A change that
#: would break a plugin first warns for one release (``DeprecationWarning``), then this number
#: goes up (docs/plugins.md, "Plugin API version").
PLUGIN_API_VERSION = 1

__all__ = [
    "ComponentConfig",
    "MCEVAE",
    "PLUGIN_API_VERSION",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "McvaeError",
    "PluginError",
    "RunFolderError",
    "TrainingError",
    "build",
    "build_model",
    "component_config",
    "create_plugin_manager",
    "hookimpl",
    "load_config",
    "plugin_manager",
    "validate_config",
]
