"""``mcvae config validate|show|schema``."""

from __future__ import annotations

import json

import click
import yaml

from ..config.experiment import check_runnable, config_to_dict, experiment_config_class, load_config
from ..config.data_size import check_data_size
from ..errors import ConfigError, DataError
from . import cli

set_option = click.option(
    "--set", "overrides", multiple=True, metavar="SECTION.FIELD=VALUE",
    help="override a config value (YAML syntax); repeatable",
)


@cli.group("config")
def config_group():
    """Validate, show and describe experiment config files."""


@config_group.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@set_option
def validate_command(files, overrides):
    """Validate each FILE as a whole, check that the data files and folders it names
    exist on this machine, that its sections can train together (e.g. loss.mode
    supervised needs data whose items carry canonical images) and that its data holds
    enough images for the prior's components and the invariant graph's neighbours (the
    training split is built to count them); exit 2 if any is invalid. ``--set`` applies
    to every FILE (e.g. a template's ``--set data.path=stack.mrcs``)."""
    failed = 0
    for path in files:
        try:
            check_data_size(check_runnable(load_config(path, overrides), source=path), source=path)
        except (ConfigError, DataError) as exc:
            failed += 1
            click.echo(f"Error: {exc}", err=True)
        else:
            click.echo(f"ok  {path}")
    if failed:
        raise SystemExit(2)


@config_group.command("show")
@click.argument("file", type=click.Path(dir_okay=False))
@set_option
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of YAML")
def show_command(file, overrides, as_json):
    """Print FILE resolved: overrides applied and every default filled in."""
    data = config_to_dict(load_config(file, overrides))
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(yaml.safe_dump(data, sort_keys=False).rstrip())


@config_group.command("schema")
def schema_command():
    """Print the JSON schema of experiment configs (for the loaded plugins)."""
    click.echo(json.dumps(experiment_config_class().model_json_schema(), indent=2))
