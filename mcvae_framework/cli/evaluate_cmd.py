"""``mcvae evaluate RUN_DIR``: clustering, pose, canonical and invariance metrics."""

from __future__ import annotations

import click

from ..errors import DataError
from ..runtime.run_layout import RunLayout
from . import cli


@cli.command("evaluate")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True,
              help="which split of the run's dataset to score")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N")
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(min=1))
@click.option("--n-actions", default=4, show_default=True, type=click.IntRange(min=1),
              help="random group actions per image for the invariance error")
@click.option("--pose-mean", type=click.Choice(["auto", "geomstats", "intrinsic"]), default="auto",
              show_default=True,
              help="how the per-cluster pose offsets are averaged: geomstats (FrechetMean on the group's "
                   "geomstats space, ExponentialBarycenter where the space has no metric), intrinsic (the "
                   "hand-written mean with the group's own exp and log), or auto (geomstats where the group "
                   "names a space, else intrinsic); report.json's pose.offset_mean says which served")
@click.option("--html/--no-html", "with_html", default=True, show_default=True,
              help="also write the class averages and the cluster gallery report.html (as `mcvae report`)")
def evaluate_command(run_dir, split, device, batch_size, n_actions, pose_mean, with_html):
    """Score RUN_DIR's trained model on a split; write report.json and report.md there.

    Clustering accuracy (Hungarian matching), NMI and ARI; pose errors (raw and after the
    best constant offset per cluster, under the group's own error keys); canonical-reconstruction
    error; invariance of the cluster latent under random group actions; the ELBO terms.
    Unless --no-html, also the class averages and report.html of the same split (see
    `mcvae report`).
    """
    # imported here, not at the top: every `mcvae` command would otherwise pay for it at start-up
    from ..report.evaluation import evaluate_run
    from ..report.inference import run_checkpoint
    from ..report.reports import json_safe, report_markdown

    run_checkpoint(run_dir, "last")  # a folder that holds no run: one message, exit code 2
    report = evaluate_run(run_dir, split=split, device=device, batch_size=batch_size, n_actions=n_actions,
                          pose_mean=pose_mean)
    click.echo(report_markdown(json_safe(report)))
    layout = RunLayout(run_dir)
    click.echo(f"wrote {layout.report_json} and {layout.report_md}")
    if with_html:
        from ..report.run_report import write_run_report

        try:
            written = write_run_report(run_dir, split, device=device, batch_size=batch_size)
        except DataError as error:  # a model of volumes: the evaluation above is all there is
            click.echo(f"no class averages or report.html: {error}")
            written = {}
        for path in written.values():
            click.echo(f"wrote {path}")
