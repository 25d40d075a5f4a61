"""mcvae_quarter_turns: the four quarter turns C4 as a discrete pose group of mcvae_framework.

The pose has no continuous part (``tau`` is empty, ``dim = 0``) and a discrete one, the
number ``k`` of quarter turns (0 to 3): the model's pose head predicts ``k`` as a category,
the loss enumerates the four turns, and evaluation reports how often ``k`` is right, up to
one turn per cluster.
"""

from __future__ import annotations

from mcvae_framework import hookimpl

from .group import QuarterTurns, QuarterTurnsConfig

__all__ = ["QuarterTurns", "QuarterTurnsConfig", "make_quarter_turns"]


def make_quarter_turns(config: QuarterTurnsConfig) -> QuarterTurns:
    """The factory registered for the ``c4`` tag (group factories get no context).

    :param config: the validated ``group`` section.
    """
    return QuarterTurns(config)


@hookimpl
def mcvae_register_groups(register):
    """Register the ``c4`` group."""
    register(QuarterTurnsConfig, make_quarter_turns)
