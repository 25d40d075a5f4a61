"""The invariant graph at full size: all 70,000 Fashion-MNIST images, rotated in [-90, 90].

    python benchmarks/bench_graph_scale.py [--limit N] [--pca-dim 64] [--features pixels|wavelets]
        [--embedding-dim 0] [--balanced] [--no-write]

Builds the training-free invariant graph (``mcvae_framework.graph.invariant_graph``) of the
train and test images together, comparing them (blurred pixels, or the oriented edge maps
of ``--features wavelets``) in a PCA space of ``--pca-dim`` dimensions (chunked: only the
top-k of every row is kept), and reports wall time, the process's peak resident memory and
the clustering accuracy as one row of the ``graph_scale`` block of ``docs/benchmarks.md``:
a run replaces the row of the same settings and keeps the others.
"""

from __future__ import annotations

import argparse
import re
import resource
import shlex
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _report import DOC, machine_line, write_block  # noqa: E402

from mcvae_framework import build  # noqa: E402
from mcvae_framework.report.evaluation import clustering_metrics  # noqa: E402
from mcvae_framework.graph.invariant_graph import invariant_graph_clusters  # noqa: E402


#: Fashion-MNIST's classes
CLUSTERS = 10


def previous_rows() -> list[str]:
    """The table rows the ``graph_scale`` block holds now (other settings' runs are kept)."""
    text = DOC.read_text(encoding="utf-8")
    match = re.search(r"<!-- BEGIN graph_scale -->\n(.*?)<!-- END graph_scale -->", text, re.S)
    lines = match.group(1).splitlines() if match else []
    # rows of this table have six cells; the header and its rule are rebuilt
    return [line for line in lines if line.startswith("| ") and line.count(" | ") == 5
            and not line.startswith(("| images", "| ---"))]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="images per split (default: all)")
    parser.add_argument("--pca-dim", type=int, default=64, help="compare in a PCA space of this size")
    parser.add_argument("--features", choices=("pixels", "wavelets"), default="pixels", help="what images are compared by")
    parser.add_argument("--embedding-dim", type=int, default=0, help="spectral dimensions (0: twice the clusters)")
    parser.add_argument("--balanced", action="store_true", help="clusters held to equal sizes")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite the block of docs/benchmarks.md")
    args = parser.parse_args(argv)
    data = {"type": "fashion_mnist", "limit": args.limit, "transform": {"group": "so2", "angle_deg": [-90, 90], "seed": 0}}
    splits = [build("data", data, split=split).as_tensors() for split in ("train", "test")]
    images = torch.cat([s["image"] for s in splits])
    labels = torch.cat([s["label"] for s in splits]).numpy()
    group = build("group", {"type": "so2", "angle_deg": [-90, 90]})
    start = time.perf_counter()
    graph = invariant_graph_clusters(images, group, CLUSTERS, pca_dim=args.pca_dim, features=args.features,
                                     embedding_dim=args.embedding_dim, balanced=args.balanced, progress=True)
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    accuracy = clustering_metrics(labels, graph.labels.numpy())["accuracy"]
    command = "python benchmarks/bench_graph_scale.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    settings = f"{args.features}, PCA {graph.info['feature_dim']}, {graph.info['search_poses']} poses, " \
               f"{graph.neighbours.shape[1]} neighbours, {args.embedding_dim or 2 * CLUSTERS} spectral dims, " \
               f"{'balanced' if args.balanced else 'k-means'}"
    row = (f"| {len(images):,} | {settings} | {seconds:.0f} | {peak_mib:.0f} | {accuracy:.3f} | "
           f"`{command.strip()}` -- {machine_line()} |")
    rows = [r for r in previous_rows() if not r.startswith(f"| {len(images):,} | {settings} |")] + [row]
    text = "\n".join([
        "| images | graph | wall time (s) | peak memory (MiB) | accuracy (all images) | command -- machine |",
        "| ---: | --- | ---: | ---: | ---: | --- |", *rows, "",
        "Peak memory is the whole process's (the 70,000 images and their moved copies included).",
    ])
    if not args.no_write:
        write_block("graph_scale", text)
    print(text)
    return {"seconds": seconds, "peak_mib": peak_mib, "accuracy": accuracy}


if __name__ == "__main__":
    main()
