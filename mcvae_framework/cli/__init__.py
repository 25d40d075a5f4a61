"""The ``mcvae`` command. Each sub-command group lives in its own module here."""

from __future__ import annotations

import click

from ..errors import McvaeError


class McvaeGroup(click.Group):
    """Turns a :class:`McvaeError` into its one-paragraph message and exit code: a user
    sees what to fix, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except McvaeError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=McvaeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mcvae-framework", prog_name="mcvae")
def cli():
    """Multi-Clustering Equivariant VAEs: pose-invariant clusters, poses on a Lie group and
    canonical reconstructions, from plugins and config files."""


# Sub-command modules attach themselves to `cli` on import.
from . import (  # noqa: E402,F401
    config_cmd, plugins_cmd, evaluate_cmd, predict_cmd, plot_cmd, report_cmd, train_cmd, data_cmd, graph_cmd,
)


def main(argv=None):
    return cli.main(args=argv, prog_name="mcvae")
