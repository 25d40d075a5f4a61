"""mcvae_translations: the group T(2) of pure 2-D translations, as an mcvae_framework plugin.

The whole plugin is this hook implementation plus the config class and the group in
:mod:`mcvae_translations.group`. The distribution's ``pyproject.toml`` points the
``mcvae_framework`` entry-point group at this module, so installing the distribution is
enough for ``group: {type: translation2}`` to become a valid config section.
"""

from __future__ import annotations

from mcvae_framework import hookimpl

from .group import Translation2, Translation2Config

__all__ = ["Translation2", "Translation2Config", "make_translation2"]


def make_translation2(config: Translation2Config) -> Translation2:
    """The factory registered for the ``translation2`` tag.

    Group factories get no context: ``factory(config)``.

    :param config: the validated ``group`` section.
    """
    return Translation2(config)


@hookimpl
def mcvae_register_groups(register):
    """Register the ``translation2`` group."""
    register(Translation2Config, make_translation2)
