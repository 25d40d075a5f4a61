"""``mcvae plot RUN_DIR``: PNG figures of a trained run."""

from __future__ import annotations

import click

from . import cli


@cli.command("plot")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--out-dir", type=click.Path(file_okay=False), default=None, help="default: RUN_DIR/plots")
@click.option("--method", type=click.Choice(["auto", "tsne", "pca"]), default="auto", show_default=True,
              help="2-D embedding of the cluster latent (auto: t-SNE up to 3,000 points, else PCA)")
@click.option("--n-images", default=12, show_default=True, type=click.IntRange(min=1))
@click.option("--max-points", default=2000, show_default=True, type=click.IntRange(min=2),
              help="images shown in the latent map")
@click.option("--device", default="cpu", show_default=True)
@click.option("--checkpoint", type=click.Choice(["last", "best"]), default="last", show_default=True,
              help="which checkpoint of the run: last.pt or best.pt")
def plot_command(run_dir, split, out_dir, method, n_images, max_points, device, checkpoint):
    """Write reconstructions, latent map, cluster prototypes (each row with its number of
    images; an empty cluster says so) and training curves as PNGs."""
    # imported here, not at the top: every `mcvae` command would otherwise pay for it at start-up
    from ..report.plotting import plot_run

    written = plot_run(run_dir, split=split, out_dir=out_dir, method=method, n_images=n_images,
                       max_points=max_points, device=device, checkpoint=checkpoint)
    for name, path in written.items():
        click.echo(f"{name:16s} {path}")
