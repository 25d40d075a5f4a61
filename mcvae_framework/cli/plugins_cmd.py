"""``mcvae plugins``: what is loaded, from which distribution, registering which tags."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from ..hookspecs import KINDS
from ..config.plugins import plugin_manager
from . import cli


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="print the listing as JSON")
def plugins_command(as_json):
    """List loaded plugins: distribution, version, and the tags each registers per kind."""
    pm = plugin_manager()
    infos = pm.plugin_infos()
    if as_json:
        payload = {"plugins": [asdict(i) for i in infos], "failed": pm.failed}
        click.echo(json.dumps(payload, indent=2))
        return
    if not infos:
        click.echo("no plugins loaded (is MCVAE_DISABLE_PLUGIN_AUTOLOAD set?)")
    for info in infos:
        origin = f"{info.distribution} {info.version}" if info.distribution else "registered directly"
        click.echo(f"{info.name}  ({origin})")
        for kind in KINDS:
            if kind in info.registers:
                click.echo(f"    {kind:8s} {', '.join(info.registers[kind])}")
    for name, error in pm.failed.items():
        click.echo(f"{name}  FAILED TO LOAD: {error}")
