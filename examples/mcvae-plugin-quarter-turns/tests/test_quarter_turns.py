"""The c4 group passes mcvae_framework's group contract kit -- its discrete-part checks
included -- plus its own checks."""

import pytest
import torch

from mcvae_framework import build
from mcvae_framework.errors import ConfigError
from mcvae_framework.testing import LieGroupContract


class TestQuarterTurns(LieGroupContract):
    """Every generic check of a Lie group, for a finite group (dim 0, four components)."""

    group_config = {"type": "c4"}


def test_a_quarter_turn_moves_pixels_exactly():
    group = build("group", {"type": "c4"})
    image = torch.rand(1, 1, 9, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    turned = group.act(image, group.component_elements(dtype=torch.float64)[1:2])
    # content at p moves to g p: with y pointing down, a positive turn is clockwise on screen
    torch.testing.assert_close(turned, torch.rot90(image, k=-1, dims=(2, 3)))


def test_elements_are_the_turns_and_compose_modulo_four():
    group = build("group", {"type": "c4"})
    turns = group.component_elements(dtype=torch.float64)
    three_then_two = group.compose(turns[3:4], turns[2:3])
    assert group.component_of(three_then_two).tolist() == [1]
    assert group.distance(turns[1:2], turns[3:4])["rotation_deg"].item() == pytest.approx(180.0)


def test_sample_draws_only_the_configured_turns():
    group = build("group", {"type": "c4", "turns": [0, 2]})
    _, tau, turns = group.sample_elements(200, torch.Generator().manual_seed(1))
    assert tau.shape == (200, 0) and set(turns.tolist()) == {0, 2}


def test_an_empty_list_of_turns_is_refused():
    with pytest.raises(ConfigError, match="turns"):
        build("group", {"type": "c4", "turns": []})
