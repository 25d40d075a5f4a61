"""``mcvae train CONFIG [--set a.b=value ...] [--resume] [--out-dir DIR] [--overwrite]``."""

from __future__ import annotations

from pathlib import Path

import click

from ..config.experiment import apply_overrides, check_runnable, config_to_dict, read_config_file, validate_config
from ..runtime.run_layout import RunLayout, check_for_training
from . import cli
from .config_cmd import set_option


def check_run_folder(config, *, resume: bool, overwrite: bool) -> Path:
    """The run folder of ``config``, checked against ``--resume`` / ``--overwrite`` before
    anything is built (:func:`~mcvae_framework.runtime.run_layout.check_for_training`), so
    that each mistake is one message with exit code 2.

    :raises RunFolderError: the folder already holds a run (neither flag given), holds no
        checkpoint to resume, or holds a run of another model than ``config`` describes.
    """
    layout = RunLayout(config.training.out_dir)
    check_for_training(layout, resume=resume, overwrite=overwrite, config_dict=config_to_dict(config))
    return layout.root


@cli.command("train")
@click.argument("config_file", metavar="CONFIG", type=click.Path(dir_okay=False))
@set_option
@click.option("--resume", is_flag=True, help="continue the run in the run folder from its last checkpoint")
@click.option("--out-dir", type=click.Path(file_okay=False), default=None,
              help="run folder (overrides training.out_dir)")
@click.option("--overwrite", is_flag=True, help="start afresh in a run folder that already holds a run")
def train_command(config_file, overrides, resume, out_dir, overwrite):
    """Train a model from CONFIG and write its run folder: config.json, metrics.csv,
    train.log and checkpoints/ (last.pt, and best.pt by training.best_metric).

    The run lasts loss.pretrain_epochs + training.epochs epochs. Ctrl-C keeps the
    checkpoint of the last finished epoch (exit code 130); --resume goes on from it (from
    checkpoints/previous.pt, the epoch before, when last.pt is damaged). Under
    `torchrun --nproc_per_node N` the same command trains with DistributedDataParallel and
    only rank 0 writes files.
    """
    data = apply_overrides(read_config_file(config_file), overrides, source=config_file)
    if out_dir is not None:
        data.setdefault("training", {})
        if isinstance(data["training"], dict):
            data["training"]["out_dir"] = str(out_dir)
    config = validate_config(data, source=config_file, base_dir=Path(config_file).parent)
    check_runnable(config, source=config_file)
    check_run_folder(config, resume=resume, overwrite=overwrite)
    # imported here, not at the top: every `mcvae` command would otherwise pay for it at start-up
    from ..train.trainer import Trainer

    trainer = Trainer(config, resume=resume, overwrite=overwrite, source=config_file)
    run_dir = trainer.run()
    if trainer.context.is_main:  # on stdout (the log goes to stderr): scripts can read it
        click.echo(f"run folder: {run_dir}")
