"""``mcvae report RUN_DIR``: class averages and the cluster gallery (report.html)."""

from __future__ import annotations

import click

from . import cli


@cli.command("report")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--split", type=click.Choice(["test", "train", "all"]), default="test", show_default=True,
              help="which images of the run's data: one split, or all of them in the data's own order")
@click.option("--checkpoint", type=click.Choice(["last", "best"]), default="last", show_default=True,
              help="which checkpoint of the run: last.pt or best.pt")
@click.option("--members", "n_members", default=6, show_default=True, type=click.IntRange(min=1),
              help="members shown per cluster among the most, and among the least, confident")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N")
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(min=1))
def report_command(run_dir, split, checkpoint, n_members, device, batch_size):
    """Write RUN_DIR's class averages and its cluster gallery.

    class_averages.png (each cluster's members moved back by their poses and averaged;
    size, mean probability and the FRC resolution of two random halves),
    class_averages.json, class_averages.mrcs (images read from an MRC stack), and
    report.html: a self-contained page with one card per cluster (class average, decoded
    prototype, most and least confident members, pose histogram), the confusion matrix
    when the data has labels, the training curves, and keep / reject marks that give the
    selection as a file and as the `mcvae predict ... --clusters` command that writes it.
    """
    # imported here, not at the top: every `mcvae` command would otherwise pay for it at start-up
    from ..report.inference import run_checkpoint
    from ..report.run_report import write_run_report

    run_checkpoint(run_dir, checkpoint)  # a folder that holds no run: one message, exit code 2
    written = write_run_report(run_dir, split, checkpoint=checkpoint, device=device, batch_size=batch_size,
                               n_members=n_members)
    for path in written.values():
        click.echo(f"wrote {path}")
