"""``build(kind, config, **context)``: a component from its config section (the function is
:func:`mcvae_framework.build`; this module is named for what it builds)."""

from __future__ import annotations

from typing import Any

from .experiment import component_config
from ..errors import PluginError
from ..hookspecs import KINDS
from .plugins import current_registry


def build(kind: str, config: Any, **context):
    """Build one component.

    :param kind: the config section's name: ``data``, ``group``, ``encoder``, ``decoder``
        or ``prior``.
    :param config: a dict with a ``type`` tag, or that component's config object.
    :param context: what the experiment decides outside the component's section, e.g.
        ``image_shape=(1, 28, 28)`` for an encoder, ``dim=10`` for a prior,
        ``split="test"`` for a dataset.
    :raises ConfigError: the config does not validate (names the field and what is allowed).
    """
    if kind not in KINDS:
        raise PluginError(f"unknown component kind {kind!r}; kinds are {', '.join(KINDS)}")
    registry = current_registry()
    cfg = component_config(kind, config, registry=registry)
    return registry.get(kind, cfg.type).build(cfg, **context)
