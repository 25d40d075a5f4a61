"""The axis_scaling group passes mcvae_framework's group contract kit with its own error
key only (no rotation), plus its own checks."""

import pytest
import torch

from mcvae_framework import build
from mcvae_framework.errors import ConfigError
from mcvae_framework.testing import LieGroupContract


class TestAxisScaling(LieGroupContract):
    """Every generic check of a Lie group, with only the group's own distance key."""

    group_config = {"type": "axis_scaling", "max_log_scale": 0.3}


def test_distance_has_only_its_own_key():
    group = build("group", {"type": "axis_scaling"})
    g1 = group.exp(torch.tensor([[0.3, 0.0]], dtype=torch.float64))
    g2 = group.exp(torch.tensor([[0.0, -0.4]], dtype=torch.float64))
    errors = group.distance(g1, g2)
    assert set(errors) == {"axis_log_scale"}  # no rotation_deg to invent
    torch.testing.assert_close(errors["axis_log_scale"], torch.tensor([0.5], dtype=torch.float64))
    assert group.primary_error == "axis_log_scale" and group.rotation_error is None and group.half_turn() is None


def test_a_square_becomes_a_wide_rectangle():
    group = build("group", {"type": "axis_scaling"})
    image = torch.zeros(1, 1, 32, 32, dtype=torch.float64)
    image[0, 0, 12:20, 12:20] = 1.0
    wide = group.act(image, group.exp(torch.tensor([[0.5, -0.5]], dtype=torch.float64)))[0, 0]
    width = int((wide.sum(0) > 0.5).sum())
    height = int((wide.sum(1) > 0.5).sum())
    assert width > 10 and height < 8, (width, height)  # the 8-pixel square, stretched and squeezed


def test_out_of_range_scale_is_refused_with_the_field_name():
    with pytest.raises(ConfigError, match="max_log_scale"):
        build("group", {"type": "axis_scaling", "max_log_scale": 3})
