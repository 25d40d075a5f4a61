"""``mcvae predict RUN_DIR --data CONFIG_OR_PATH [--out FILE]``."""

from __future__ import annotations

import click

from . import cli


@cli.command("predict")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--data", "data", required=True, type=click.Path(exists=True),
              help="a folder of images, a .npy/.npz array file, or an experiment config (its data section)")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="output file: .csv, .npz, .parquet or .star (RELION 3.1+ particles; the extension picks the "
                   "format); default: RUN_DIR/predictions/<data name>.csv")
@click.option("--clusters", default=None, metavar="LIST",
              help="keep only the images of these clusters, e.g. 1,3,4 (numbers from 0, as in report.html and every "
                   "output; a STAR file's rlnClassNumber is the cluster + 1)")
@click.option("--pixel-size", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Angstrom per pixel for a .star file (default: the MRC header's, or the data section's "
                   "pixel_size; 1 for images that are not from a particle stack)")
@click.option("--split", type=click.Choice(["train", "test"]), default=None,
              help="predict one split of the data only (default: every image, in the data's own order)")
@click.option("--split-column", is_flag=True, help="add a `split` column: the split (train/test) of each image")
@click.option("--checkpoint", type=click.Choice(["last", "best"]), default="last", show_default=True,
              help="which checkpoint of the run: last.pt or best.pt")
@click.option("--with-graph", is_flag=True,
              help="the run's own images only: each image's cluster probabilities averaged with those of its "
                   "invariant-graph neighbours (report.json's consensus); the model's own cluster goes to "
                   "model_cluster")
@click.option("--canonical", "with_canonical", is_flag=True, help="also store canonical images (.npz only)")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N")
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(min=1))
def predict_command(run_dir, data, out, clusters, pixel_size, split, split_column, checkpoint, with_graph,
                    with_canonical, device, batch_size):
    """Cluster, cluster probabilities and pose of every image in --data, written to --out:
    one row per image in the data's own order (a folder's sorted listing, an array file's
    order), the file name (or array index) first.

    A .npz file also holds every pose as a group element: pose_matrix (N, 3, 3), the
    homogeneous matrix exp(tau); pose_geomstats, the same poses as points of the group's
    geomstats space (for a group that names one; geomstats tools such as FrechetMean take
    them as they are, see examples/geomstats-poses); and pose_group, the group's tag.

    A .star file is a RELION 3.1+ particle file (optics and particles blocks): rlnImageName
    (index@stack.mrcs: the MRC stack itself, or for other images a stack written beside the
    file), rlnClassNumber, rlnAnglePsi and rlnOriginXAngst/YAngst in RELION's convention,
    rlnMaxValueProbDistribution."""
    # imported here, not at the top: every `mcvae` command would otherwise pay for it at start-up
    from ..report.prediction import predict_run
    from ..report.star_export import parse_clusters

    path = predict_run(run_dir, data, out, split=split, device=device, batch_size=batch_size,
                       with_canonical=with_canonical, split_column=split_column, checkpoint=checkpoint,
                       clusters=parse_clusters(clusters), pixel_size=pixel_size, with_graph=with_graph)
    click.echo(f"wrote {path}")
