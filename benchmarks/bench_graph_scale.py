"""The invariant graph at full size: all 70,000 Fashion-MNIST images, rotated in [-90, 90].

    python benchmarks/bench_graph_scale.py [--limit N] [--pca-dim 64] [--no-write]

Builds the training-free invariant graph (``mcvae_framework.invariant_graph``) of the
train and test images together, comparing them in a PCA space of ``--pca-dim``
dimensions (chunked: only the top-k of every row is kept), and reports wall time, the
process's peak resident memory and the clustering accuracy, to the ``graph_scale`` block
of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import resource
import shlex
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _report import machine_line, write_block  # noqa: E402

from mcvae_framework import build  # noqa: E402
from mcvae_framework.evaluation import clustering_metrics  # noqa: E402
from mcvae_framework.invariant_graph import invariant_graph_clusters  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="images per split (default: all)")
    parser.add_argument("--pca-dim", type=int, default=64, help="compare in a PCA space of this size")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite the block of docs/benchmarks.md")
    args = parser.parse_args(argv)
    data = {"type": "fashion_mnist", "limit": args.limit, "transform": {"group": "so2", "angle_deg": [-90, 90], "seed": 0}}
    splits = [build("data", data, split=split).as_tensors() for split in ("train", "test")]
    images = torch.cat([s["image"] for s in splits])
    labels = torch.cat([s["label"] for s in splits]).numpy()
    group = build("group", {"type": "so2", "angle_deg": [-90, 90]})
    start = time.perf_counter()
    graph = invariant_graph_clusters(images, group, 10, pca_dim=args.pca_dim, progress=True)
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    accuracy = clustering_metrics(labels, graph.labels.numpy())["accuracy"]
    command = "python benchmarks/bench_graph_scale.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    text = "\n".join([
        f"`{command.strip()}` -- {machine_line()}.", "",
        "| images | PCA dims | search poses | neighbours | wall time (s) | peak memory (MiB) | accuracy (all images) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {len(images):,} | {graph.info['feature_dim']} | {graph.info['search_poses']} | {graph.neighbours.shape[1]} | "
        f"{seconds:.0f} | {peak_mib:.0f} | {accuracy:.3f} |", "",
        "Peak memory is the whole process's (the 70,000 images and their moved copies included).",
    ])
    if not args.no_write:
        write_block("graph_scale", text)
    print(text)
    return {"seconds": seconds, "peak_mib": peak_mib, "accuracy": accuracy}


if __name__ == "__main__":
    main()
