"""``mcvae graph CONFIG [--out FILE] [--split train|test]``: the invariant clustering alone."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click
import numpy as np

from ..config.components import build
from ..config.experiment import check_resources, load_config
from ..errors import ConfigError
from . import cli
from .config_cmd import set_option


@cli.command("graph")
@click.argument("config_file", metavar="CONFIG", type=click.Path(dir_okay=False))
@set_option
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="output file: .csv, .npz or .parquet (the extension picks the format); "
                   "default: graph.csv in the run folder (training.out_dir)")
@click.option("--split", type=click.Choice(["train", "test"]), default=None,
              help="one split of the data only (default: every image, in the data's own order)")
def graph_command(config_file, overrides, out, split):
    """Cluster CONFIG's images by the training-free invariant graph, with the settings a
    training of CONFIG would use (its graph section, group, prior's component count and
    training.seed), and write one row per image in the data's own order: name (for data
    with file names), index (the position in the source), split, cluster, confident (the
    image sits near its cluster's centre) and, where the group rotates, angle (the
    synchronised rotation in radians, up to one offset per cluster) and pose_trust (0-1: how
    well the image's synchronised pose agrees with its neighbours' relative poses; low over a
    whole cluster where its shape looks the same after part of a turn).

    A .npz file also holds every image's neighbours and their similarities, for a group
    with a discrete part or rotations of volumes its synchronised orthogonal pose (poses,
    N x d x d, up to one per cluster), and the settings the graph chose (settings_json). The log (stderr) names them too: exact or
    approximate neighbour search, index, eigensolver, k-means. Under `torchrun` the graph
    is built once, by rank 0, which alone writes the file.
    """
    # imported here, not at the top: every `mcvae` command would otherwise pay for it at start-up
    import torch

    from ..report.prediction import check_output_path
    from ..runtime.distributed import DistributedContext
    from ..train.graph_build import build_invariant_graph, dataset_images
    from ..train.run_logging import ProgressLogHandler

    config = check_resources(load_config(config_file, overrides), source=config_file)
    default = Path(config.training.out_dir) / (f"graph_{split}.csv" if split else "graph.csv")
    out = check_output_path(out if out is not None else default)
    context = DistributedContext.from_env()
    context.setup(torch.device("cpu"))  # gloo: the processes exchange the finished graph only
    handler = ProgressLogHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("mcvae_framework")
    level = logger.level
    logger.setLevel(logging.INFO)
    if context.is_main:
        logger.addHandler(handler)
    try:
        torch.set_num_threads(config.training.num_threads or torch.get_num_threads())
        group = build("group", config.group)
        n_clusters = build("prior", config.prior, dim=config.model.z_cluster_dim).n_components
        dataset = images = None
        if context.is_main:
            dataset = graph_dataset(config, split)
            images = dataset_images(dataset, progress="features")
        graph = build_invariant_graph(config, images, group, n_clusters, context=context, progress=True)
        if context.is_main:
            path = write_graph(graph_table(graph, dataset), out)
            click.echo(f"wrote {path}")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        context.close()


def graph_dataset(config, split: str | None):
    """The dataset ``mcvae graph`` clusters: one split, or every image in the source's own
    order (the plugin's ``split="all"``; for a plugin that refuses it, train then test)."""
    from ..runtime.data import ConcatenatedSplits

    if split is not None:
        return build("data", config.data, split=split)
    try:
        return build("data", config.data, split="all")
    except ConfigError:
        return ConcatenatedSplits([build("data", config.data, split=s) for s in ("train", "test")])


def graph_table(graph, dataset) -> dict[str, np.ndarray]:
    """The per-image columns of ``mcvae graph``'s output, in the data's order, and (for .npz)
    the neighbour lists and settings."""
    n = len(graph.labels)
    columns = {}
    names = getattr(dataset, "item_names", None)
    if names is not None:
        columns["name"] = np.asarray([str(name) for name in names], dtype=str)
    sources = getattr(dataset, "source_indices", None)
    columns["index"] = np.asarray(sources, dtype=np.int64) if sources is not None else np.arange(n)
    splits = getattr(dataset, "item_splits", None)
    if splits is not None:
        columns["split"] = np.asarray(splits, dtype=str)
    columns["cluster"] = graph.labels.numpy().astype(np.int64)
    columns["confident"] = graph.confident.numpy().astype(np.int64)
    if graph.angles is not None:
        columns["angle"] = graph.angles.numpy().astype(np.float64)
    if graph.pose_trust is not None:
        columns["pose_trust"] = graph.pose_trust.numpy().astype(np.float64)
    extras = {"neighbours": graph.neighbours.numpy(), "similarities": graph.similarities.numpy(),
              "settings_json": np.asarray(json.dumps({**graph.info, "seconds": round(graph.seconds, 2)}))}
    if graph.poses is not None:
        extras["poses"] = graph.poses.numpy()
    return {"columns": columns, "extras": extras}


def write_graph(table: dict, out: Path) -> Path:
    """Write ``graph_table``'s result in the format ``out``'s extension names."""
    from ..report.prediction import _write_csv

    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = out.suffix.lower()
    if suffix == ".npz":
        np.savez_compressed(out, **table["columns"], **table["extras"])
    elif suffix == ".csv":
        _write_csv(table["columns"], out)
    else:
        import pandas as pd  # optional dependency, checked by check_output_path

        pd.DataFrame(table["columns"]).to_parquet(out, index=False)
    return out
