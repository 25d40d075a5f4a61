"""The invariant graph at full size: all 70,000 Fashion-MNIST images, rotated in [-90, 90].

    python benchmarks/bench_graph_scale.py [--limit N] [--pca-dim 64] [--features pixels|wavelets]
        [--embedding-dim 0] [--balanced] [--neighbour-search auto|exact|approximate]
        [--out FILE] [--no-doc]

Builds the training-free invariant graph (``mcvae_framework.graph.invariant_graph``) of the
train and test images together, comparing them (blurred pixels, or the oriented edge maps
of ``--features wavelets``) in a PCA space of ``--pca-dim`` dimensions (chunked: only the
top-k of every row is kept), and reports wall time, the process's peak resident memory and
the clustering accuracy as one row of ``benchmarks/results/graph_scale.json`` and of the
``graph_scale`` block: a run replaces the row of the same settings and keeps the others
(read from the JSON file, never from the page).
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _report import benchmark_parser, command_line, load_result, machine_line, publish  # noqa: E402

from mcvae_framework import build  # noqa: E402
from mcvae_framework.report.evaluation import clustering_metrics  # noqa: E402
from mcvae_framework.graph.invariant_graph import invariant_graph_clusters  # noqa: E402


#: Fashion-MNIST's classes
CLUSTERS = 10


def main(argv=None) -> dict:
    parser = benchmark_parser(__file__, __doc__, "graph_scale")
    parser.add_argument("--limit", type=int, default=None, help="images per split (default: all)")
    parser.add_argument("--pca-dim", type=int, default=64, help="compare in a PCA space of this size")
    parser.add_argument("--features", choices=("pixels", "wavelets"), default="pixels", help="what images are compared by")
    parser.add_argument("--embedding-dim", type=int, default=0, help="spectral dimensions (0: twice the clusters)")
    parser.add_argument("--balanced", action="store_true", help="clusters held to equal sizes")
    parser.add_argument("--neighbour-search", choices=("auto", "exact", "approximate"), default="auto",
                        help="how the neighbours are found (graph.neighbour_search)")
    args = parser.parse_args(argv)
    data = {"type": "fashion_mnist", "limit": args.limit, "transform": {"group": "so2", "angle_deg": [-90, 90], "seed": 0}}
    splits = [build("data", data, split=split).as_tensors() for split in ("train", "test")]
    images = torch.cat([s["image"] for s in splits])
    labels = torch.cat([s["label"] for s in splits]).numpy()
    group = build("group", {"type": "so2", "angle_deg": [-90, 90]})
    start = time.perf_counter()
    graph = invariant_graph_clusters(images, group, CLUSTERS, pca_dim=args.pca_dim, features=args.features,
                                     embedding_dim=args.embedding_dim, balanced=args.balanced,
                                     neighbour_search=args.neighbour_search, progress=True)
    row = {"images": len(images),
           "settings": f"{args.features}, PCA {graph.info['feature_dim']}, {graph.info['search_poses']} poses, "
                       f"{graph.neighbours.shape[1]} neighbours, {args.embedding_dim or 2 * CLUSTERS} spectral dims, "
                       f"{'balanced' if args.balanced else 'k-means'}, {graph.info['neighbour_search']} search",
           "seconds": time.perf_counter() - start,
           "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "accuracy": clustering_metrics(labels, graph.labels.numpy())["accuracy"],
           "command": command_line(__file__, argv), "machine": machine_line()}
    earlier = (load_result("graph_scale") or {}).get("rows", [])
    rows = [r for r in earlier if (r["images"], r["settings"]) != (row["images"], row["settings"])] + [row]
    return publish({"command": "python benchmarks/bench_graph_scale.py (one run per row)", "rows": rows}, args, argv,
                   machine="one machine line per row")


def render(result: dict) -> str:
    rows = [f"| {r['images']:,} | {r['settings']} | {r['seconds']:.0f} | {r['peak_mib']:.0f} | {r['accuracy']:.3f} | "
            f"`{r['command']}` -- {r['machine']} |" for r in result["rows"]]
    return "\n".join([
        "| images | graph | wall time (s) | peak memory (MiB) | accuracy (all images) | command -- machine |",
        "| ---: | --- | ---: | ---: | ---: | --- |", *rows, "",
        "Peak memory is the whole process's (the 70,000 images and their moved copies included).",
    ])


if __name__ == "__main__":
    main()
