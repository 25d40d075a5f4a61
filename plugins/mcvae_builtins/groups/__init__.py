"""Built-in groups plugin: ``so2``, ``o2``, ``se2``, ``scale_rotation``, ``sim2`` and ``affine2`` (planar),
``so3`` (rotations of 3-D volumes).

Closed-form, batched torch implementations (the training hot path). geomstats is never
imported here: each group names its geomstats space through ``geomstats_space``, which
the framework calls (evaluation, predictions) with the geomstats classes it imported.
"""

from __future__ import annotations

from mcvae_framework import hookimpl

from .affine2 import Affine2, Affine2Config, make_affine2
from .o2 import O2Config, Orthogonal2, make_o2
from .scale_rotation import ScaleRotation2, ScaleRotationConfig, make_scale_rotation
from .se2 import SE2Config, SpecialEuclidean2, make_se2
from .sim2 import Sim2Config, Similarity2, make_sim2
from .so2 import SO2Config, SpecialOrthogonal2, make_so2
from .so3 import SO3Config, SpecialOrthogonal3, make_so3

__all__ = [
    "Affine2",
    "Affine2Config",
    "O2Config",
    "Orthogonal2",
    "SE2Config",
    "SO2Config",
    "SO3Config",
    "ScaleRotation2",
    "ScaleRotationConfig",
    "Sim2Config",
    "Similarity2",
    "SpecialEuclidean2",
    "SpecialOrthogonal2",
    "SpecialOrthogonal3",
]


@hookimpl
def mcvae_register_groups(register):
    """Register the six built-in planar groups and the rotations of volumes."""
    register(SO2Config, make_so2)
    register(O2Config, make_o2)
    register(SE2Config, make_se2)
    register(ScaleRotationConfig, make_scale_rotation)
    register(Sim2Config, make_sim2)
    register(Affine2Config, make_affine2)
    register(SO3Config, make_so3)
