"""The translation2 group passes mcvae_framework's group contract kit, plus its own checks."""

import pytest
import torch

from mcvae_framework import build
from mcvae_framework.errors import ConfigError
from mcvae_framework.testing import LieGroupContract


class TestTranslation2(LieGroupContract):
    """Every generic check of a Lie group: axioms, exp/log round trips, gradients, the
    action's composition law and exactness at the identity, sampling ranges, dtypes."""

    group_config = {"type": "translation2", "shift": 0.2}


def test_one_pixel_shift_moves_content_one_pixel_right_and_down():
    """The image convention, checked on pixels: u1 runs along the width, u2 down the
    height, and a shift of 2/H normalised units is one pixel."""
    group = build("group", {"type": "translation2"})
    image = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    image[0, 0, 3, 2] = 1.0
    moved = group.act(image, group.exp(torch.tensor([[2 / 8, 2 / 8]], dtype=torch.float64)))
    expected = torch.zeros_like(image)
    expected[0, 0, 4, 3] = 1.0
    torch.testing.assert_close(moved, expected)


def test_sample_stays_in_the_configured_box():
    group = build("group", {"type": "translation2", "shift": 0.25})
    tau = group.sample(10000, generator=torch.Generator().manual_seed(0))
    assert tau.shape == (10000, 2)
    assert float(tau.abs().max()) <= 0.5  # a quarter of the side = 0.5 normalised units
    assert float(tau.abs().max()) > 0.45  # and the box is filled, not just its centre


def test_distance_is_the_length_of_the_shift_between_poses():
    group = build("group", {"type": "translation2"})
    g1 = group.exp(torch.tensor([[0.3, 0.0]]))
    g2 = group.exp(torch.tensor([[0.0, 0.4]]))
    errors = group.distance(g1, g2)
    torch.testing.assert_close(errors["translation"], torch.tensor([0.5]))
    assert set(errors) == {"translation"}  # nothing rotates: no rotation error is reported


def test_out_of_range_shift_is_refused_with_the_field_name():
    with pytest.raises(ConfigError, match="shift"):
        build("group", {"type": "translation2", "shift": 1.5})
