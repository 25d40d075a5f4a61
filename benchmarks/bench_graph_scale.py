"""The invariant graph at scale: Fashion-MNIST's 70,000 images, and rotated copies up to a million.

    python benchmarks/bench_graph_scale.py [--limit N] [--pca-dim 64] [--features pixels|wavelets]
        [--embedding-dim 0] [--balanced] [--neighbour-search auto|exact|approximate]
        [--recall-sample 2000] [--no-write]
    python benchmarks/bench_graph_scale.py --images N [--data-dir DIR] [same options]

Without ``--images``: the training-free invariant graph (``mcvae_framework.graph``) of the
train and test images together, rotated in [-90, 90], as one row of the ``graph_scale``
block of ``docs/benchmarks.md`` (a run replaces the row of the same settings).

With ``--images N``: ``N`` rotated copies of the 70,000 images (copy ``c`` of image ``i`` is
image ``N`` index ``c * 70,000 + i``, rotated by a seeded angle in [-90, 90]), written once
as one uint8 memory-mapped ``.npy`` under ``--data-dir``, clustered by the code path of
``mcvae graph`` (an ``arrays`` config, ``storage: stream``: read a chunk at a time), as one
row of the ``graph_scale_n`` block. Run each size in its own process: the peak memory is the
process's (``getrusage``'s ``ru_maxrss``).

``--prepare-only`` writes the ``.npy`` and ``DATA_DIR/graph_N.yaml`` only: the config that
``mcvae graph DATA_DIR/graph_N.yaml --out FILE`` runs as a command.

Either way, ``--recall-sample S`` also finds the exact neighbours of ``S`` seeded images
(against all images, on the same features, by wrapping the graph's search) and reports the
share of them the graph's lists hold: the recall of an approximate search.
"""

from __future__ import annotations

import argparse
import re
import resource
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _report import DOC, machine_line, write_block  # noqa: E402

from mcvae_framework import build  # noqa: E402
from mcvae_framework.graph import invariant_graph  # noqa: E402
from mcvae_framework.graph.neighbours import exact_neighbours  # noqa: E402
from mcvae_framework.report.evaluation import clustering_metrics  # noqa: E402

#: Fashion-MNIST's classes
CLUSTERS = 10
FASHION_IMAGES = 70_000


def previous_rows(block: str, cells: int) -> list[str]:
    """The table rows ``block`` holds now (other settings' runs are kept)."""
    text = DOC.read_text(encoding="utf-8")
    match = re.search(rf"<!-- BEGIN {block} -->\n(.*?)<!-- END {block} -->", text, re.S)
    lines = match.group(1).splitlines() if match else []
    return [line for line in lines if line.startswith("| ") and line.count(" | ") == cells - 1
            and not line.startswith(("| images", "| ---"))]


class RecallProbe:
    """Wraps the graph's neighbour search: after it runs, the exact lists of a seeded sample
    of rows are found on the same features, and the recall of the graph's lists measured."""

    def __init__(self, sample: int, seed: int = 0):
        self.sample, self.seed, self.recall, self.rows = sample, seed, None, 0
        self.search = invariant_graph.search_neighbours
        self.seconds = self.cpu = 0.0  # the probe's own time, left out of the graph's

    def __call__(self, reference, moved, k, **options):
        indices, values = self.search(reference, moved, k, **options)
        if self.sample:
            start, cpu = time.perf_counter(), time.process_time()
            rng = np.random.default_rng(self.seed)
            rows = torch.as_tensor(np.sort(rng.choice(len(reference), min(self.sample, len(reference)), replace=False)))
            # 64 rows at a time: a chunk holds a (rows, N) matrix
            exact, _ = exact_neighbours(reference, moved, indices.shape[1], rows=rows, chunk_size=64)
            found = indices[rows]
            self.recall = float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found.tolist(), exact.tolist())]))
            self.rows = len(rows)
            self.seconds, self.cpu = time.perf_counter() - start, time.process_time() - cpu
        return indices, values


def rotated_copies(n: int, data_dir: Path) -> tuple[Path, np.ndarray]:
    """``n`` rotated copies of Fashion-MNIST's images as one uint8 ``.npy`` (written once) and
    their labels."""
    path, label_path = data_dir / f"fashion_rotated_{n}.npy", data_dir / f"fashion_rotated_{n}_labels.npy"
    if path.is_file() and label_path.is_file():
        return path, np.load(label_path)
    data_dir.mkdir(parents=True, exist_ok=True)
    splits = [build("data", {"type": "fashion_mnist"}, split=s).as_tensors() for s in ("train", "test")]
    images = torch.cat([s["image"] for s in splits])
    labels = torch.cat([s["label"] for s in splits]).numpy()
    group = build("group", {"type": "so2", "angle_deg": [-90, 90]})
    out = np.lib.format.open_memmap(str(path) + ".part", mode="w+", dtype=np.uint8, shape=(n, 28, 28))
    for start in range(0, n, 8192):
        index = np.arange(start, min(start + 8192, n))
        source = torch.as_tensor(index % FASHION_IMAGES)
        # one seeded angle per image (each chunk draws from its own generator)
        generator = torch.Generator().manual_seed(int(start))
        angles = torch.empty(len(index)).uniform_(-np.pi / 2, np.pi / 2, generator=generator)
        moved = group.act(images[source], group.exp(angles[:, None]))
        out[start:start + len(index)] = (moved[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    out.flush()
    del out
    Path(str(path) + ".part").rename(path)
    np.save(label_path, labels[np.arange(n) % FASHION_IMAGES])
    return path, labels[np.arange(n) % FASHION_IMAGES]


def graph_config(path: Path, args) -> dict:
    """The experiment config whose ``mcvae graph`` the ``--images`` rows measure."""
    return {"data": {"type": "arrays", "path": str(path), "storage": "stream"},
            "group": {"type": "so2", "angle_deg": [-90, 90]},
            "encoder": {"type": "conv"}, "decoder": {"type": "mlp"},
            "prior": {"type": "gmm", "n_components": CLUSTERS}, "model": {"z_cluster_dim": CLUSTERS},
            "graph": {"enabled": True, "pca_dim": args.pca_dim, "features": args.features,
                      "embedding_dim": args.embedding_dim, "balanced": args.balanced,
                      "neighbour_search": args.neighbour_search},
            "training": {"seed": 0, "out_dir": str(args.data_dir / "run")}}


def run_images(args):
    """The ``--images`` mode: rotated copies through ``mcvae graph``'s code path."""
    from mcvae_framework.cli.graph_cmd import graph_dataset
    from mcvae_framework.config.experiment import validate_config
    from mcvae_framework.train.graph_build import build_invariant_graph, dataset_images

    path, labels = rotated_copies(args.images, args.data_dir)
    raw = graph_config(path, args)
    # the same experiment as a file, for `mcvae graph DATA_DIR/graph_N.yaml`
    (args.data_dir / f"graph_{args.images}.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    if args.prepare_only:
        raise SystemExit(f"wrote {path} and {args.data_dir / f'graph_{args.images}.yaml'}")
    config = validate_config(raw)
    start = time.perf_counter()
    images = dataset_images(graph_dataset(config, None), progress="features")
    graph = build_invariant_graph(config, images, build("group", config.group), CLUSTERS, progress=True)
    return graph, labels, time.perf_counter() - start


def run_fashion(args):
    """The default mode: the 70,000 images (or ``--limit`` per split), rotated once."""
    data = {"type": "fashion_mnist", "limit": args.limit, "transform": {"group": "so2", "angle_deg": [-90, 90], "seed": 0}}
    splits = [build("data", data, split=split).as_tensors() for split in ("train", "test")]
    images = torch.cat([s["image"] for s in splits])
    labels = torch.cat([s["label"] for s in splits]).numpy()
    group = build("group", {"type": "so2", "angle_deg": [-90, 90]})
    start = time.perf_counter()
    graph = invariant_graph.invariant_graph_clusters(
        images, group, CLUSTERS, pca_dim=args.pca_dim, features=args.features, embedding_dim=args.embedding_dim,
        balanced=args.balanced, neighbour_search=args.neighbour_search, progress=True)
    return graph, labels, time.perf_counter() - start


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="images per split (default: all)")
    parser.add_argument("--images", type=int, default=None, help="this many rotated copies instead (memory-mapped)")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/mcvae_graph_scale"),
                        help="where --images writes its .npy (kept for the next run)")
    parser.add_argument("--prepare-only", action="store_true",
                        help="with --images: write the .npy and DATA_DIR/graph_N.yaml (its mcvae graph config), then stop")
    parser.add_argument("--pca-dim", type=int, default=64, help="compare in a PCA space of this size")
    parser.add_argument("--features", choices=("pixels", "wavelets"), default="pixels", help="what images are compared by")
    parser.add_argument("--embedding-dim", type=int, default=0, help="spectral dimensions (0: twice the clusters)")
    parser.add_argument("--balanced", action="store_true", help="clusters held to equal sizes")
    parser.add_argument("--neighbour-search", choices=("auto", "exact", "approximate"), default="auto")
    parser.add_argument("--recall-sample", type=int, default=0, help="exact lists of this many images, for the recall")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite the block of docs/benchmarks.md")
    args = parser.parse_args(argv)
    probe = RecallProbe(args.recall_sample)
    invariant_graph.search_neighbours = probe
    try:
        graph, labels, seconds = run_images(args) if args.images else run_fashion(args)
    finally:
        invariant_graph.search_neighbours = probe.search
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak_mib = usage.ru_maxrss / 1024
    # the whole process's CPU time: on a shared, oversubscribed machine the wall time
    # measures the neighbours' load as much as this work; the CPU time does not
    cpu = usage.ru_utime + usage.ru_stime - probe.cpu
    seconds -= probe.seconds
    accuracy = clustering_metrics(labels, graph.labels.numpy())["accuracy"]
    command = "python benchmarks/bench_graph_scale.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    info = graph.info
    settings = f"{args.features}, PCA {info['feature_dim']}, {info['search_poses']} poses, " \
               f"{graph.neighbours.shape[1]} neighbours, {args.embedding_dim or 2 * CLUSTERS} spectral dims, " \
               f"{'balanced' if args.balanced else info.get('kmeans', 'k-means')}"
    search = info["neighbour_search"] + (f" ({info['backend']}, nprobe {info['nprobe']})" if "backend" in info else "")
    recall = f"{probe.recall:.3f} ({probe.rows:,} images)" if probe.recall is not None else "--"
    where = f"`{command.strip()}` -- {machine_line()}, machine shared"
    if args.images:
        row = (f"| {len(labels):,} | {settings}, {info.get('eigensolver', '')} | {search} | {info['neighbour_seconds']:.0f} "
               f"| {seconds:.0f} | {cpu:.0f} | {peak_mib:.0f} | {accuracy:.3f} | {recall} | {where} |")
        rows = [r for r in previous_rows("graph_scale_n", 10) if not r.startswith(f"| {len(labels):,} | {settings}")]
        text = "\n".join([
            "| images | graph | neighbour search | search (s) | wall time (s) | CPU time (s) | peak memory (MiB) | "
            "accuracy | recall against exact | command -- machine |",
            "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
            *sorted(rows + [row], key=lambda r: int(r.split(" | ")[0][2:].replace(",", ""))), "",
            "Rotated copies of Fashion-MNIST's 70,000 images in one uint8 `.npy` file, read a chunk at a time "
            "(`storage: stream`) through `mcvae graph`'s code path; wall time from the data's opening to the "
            "clusters; CPU time (user + system, the whole process, data generation excluded only when the "
            "`.npy` was already written) and peak memory (resident set) are the process's (`getrusage`).",
        ])
        block = "graph_scale_n"
    else:
        row = (f"| {len(labels):,} | {settings}, {search} | {seconds:.0f} (CPU {cpu:.0f}) | {peak_mib:.0f} | {accuracy:.3f} | "
               f"{recall} | {where} |")
        rows = [r for r in previous_rows("graph_scale", 7) if not r.startswith(f"| {len(labels):,} | {settings}, "
                                                                                f"{info['neighbour_search']}")]
        text = "\n".join([
            "| images | graph | wall time (s) | peak memory (MiB) | accuracy (all images) | recall against exact "
            "| command -- machine |",
            "| ---: | --- | ---: | ---: | ---: | ---: | --- |", *rows, row, "",
            "Peak memory is the whole process's (the 70,000 images and their moved copies included); CPU time "
            "(user + system, the whole process: on a shared machine the wall time also measures the others' load).",
        ])
        block = "graph_scale"
    if not args.no_write:
        write_block(block, text)
    print(text)
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_mib": peak_mib, "accuracy": accuracy, "recall": probe.recall}


if __name__ == "__main__":
    main()
