"""mcvae_axis_scaling: independent zooms of the two image axes, as an mcvae_framework plugin.

The pose is ``tau = (log_sx, log_sy)``: the content is scaled by ``e^log_sx`` along the
width and by ``e^log_sy`` along the height. The group has no rotation and no
translation; its pose error is its own, ``axis_log_scale``.
"""

from __future__ import annotations

from mcvae_framework import hookimpl

from .group import AxisScaling, AxisScalingConfig

__all__ = ["AxisScaling", "AxisScalingConfig", "make_axis_scaling"]


def make_axis_scaling(config: AxisScalingConfig) -> AxisScaling:
    """The factory registered for the ``axis_scaling`` tag (group factories get no context).

    :param config: the validated ``group`` section.
    """
    return AxisScaling(config)


@hookimpl
def mcvae_register_groups(register):
    """Register the ``axis_scaling`` group."""
    register(AxisScalingConfig, make_axis_scaling)
