"""Contract test kits: a plugin author proves a plugin with one import and one test class.

    from mcvae_framework.testing import LieGroupContract

    class TestMyGroup(LieGroupContract):
        group_config = {"type": "my_group"}

The kits are imported lazily so that ``import mcvae_framework.testing`` stays cheap.
"""

from __future__ import annotations

import importlib

_KITS = {
    "LieGroupContract": ".group_contract",
    "MixturePriorContract": ".prior_contract",
    "EncoderContract": ".network_contract",
    "DecoderContract": ".network_contract",
    "DatasetContract": ".dataset_contract",
}

__all__ = sorted(_KITS)


def __getattr__(name):
    if name in _KITS:
        return getattr(importlib.import_module(_KITS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
