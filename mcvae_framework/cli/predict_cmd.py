"""``mcvae predict RUN_DIR --data CONFIG_OR_PATH --out FILE``."""

from __future__ import annotations

import click

from . import cli


@cli.command("predict")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--data", "data", required=True, type=click.Path(exists=True),
              help="an experiment config (its data section), a .npy/.npz array file or a folder of images")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="output file: .csv, .npz or .parquet (the extension picks the format)")
@click.option("--split", type=click.Choice(["test", "train"]), default=None,
              help="split to read (default: test for a config, every image for arrays/folders)")
@click.option("--canonical", "with_canonical", is_flag=True, help="also store canonical images (.npz only)")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N")
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(min=1))
def predict_command(run_dir, data, out, split, with_canonical, device, batch_size):
    """Cluster, cluster probabilities and pose of every image in --data, written to --out."""
    from ..prediction import predict_run

    path = predict_run(run_dir, data, out, split=split, device=device, batch_size=batch_size,
                       with_canonical=with_canonical)
    click.echo(f"wrote {path}")
