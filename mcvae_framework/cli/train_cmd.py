"""``mcvae train CONFIG [--set a.b=value ...] [--resume] [--out-dir DIR] [--overwrite]``."""

from __future__ import annotations

import click

from ..config import apply_overrides, read_config_file, validate_config
from . import cli
from .config_cmd import set_option


@cli.command("train")
@click.argument("config_file", metavar="CONFIG", type=click.Path(dir_okay=False))
@set_option
@click.option("--resume", is_flag=True, help="continue the run in the run folder from its last checkpoint")
@click.option("--out-dir", type=click.Path(file_okay=False), default=None,
              help="run folder (overrides training.out_dir)")
@click.option("--overwrite", is_flag=True, help="start afresh in a run folder that already holds a run")
def train_command(config_file, overrides, resume, out_dir, overwrite):
    """Train a model from CONFIG and write its run folder: config.json, metrics.csv,
    train.log and checkpoints/.

    Ctrl-C keeps the checkpoint of the last finished epoch (exit code 130); --resume goes
    on from it. Under `torchrun --nproc_per_node N` the same command trains with
    DistributedDataParallel and only rank 0 writes files.
    """
    from ..training import Trainer  # torch-heavy: imported when the command runs

    data = apply_overrides(read_config_file(config_file), overrides, source=config_file)
    if out_dir is not None:
        data.setdefault("training", {})
        if isinstance(data["training"], dict):
            data["training"]["out_dir"] = str(out_dir)
    config = validate_config(data, source=config_file)
    trainer = Trainer(config, resume=resume, overwrite=overwrite)
    run_dir = trainer.run()
    if trainer.context.is_main:  # on stdout (the log goes to stderr): scripts can read it
        click.echo(f"run folder: {run_dir}")
