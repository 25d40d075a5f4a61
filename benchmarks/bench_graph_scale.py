"""The invariant graph at scale: Fashion-MNIST's 70,000 images, and rotated copies up to a million.

    python benchmarks/bench_graph_scale.py [--limit N] [--pca-dim 64] [--features pixels|wavelets]
        [--embedding-dim 0] [--balanced] [--neighbour-search auto|exact|approximate]
        [--neighbours 10] [--search-size 13] [--blur-sigma 1] [--recall-sample S]
        [--machine-note TEXT] [--note TEXT] [--out FILE] [--no-doc]
    python benchmarks/bench_graph_scale.py --images N [--data-dir DIR] [--prepare-only] [same options]

Without ``--images``: the training-free invariant graph
(``mcvae_framework.graph.invariant_graph``) of the train and test images together, rotated in
[-90, 90], compared (blurred pixels, or the oriented edge maps of ``--features wavelets``) in
a PCA space of ``--pca-dim`` dimensions (chunked: only the top-k of every row is kept), as
one row of ``benchmarks/results/graph_scale.json`` and of the ``graph_scale`` block.

With ``--images N``: ``N`` rotated copies of the 70,000 images (image ``c * 70,000 + i`` is
image ``i`` rotated by a seeded angle in [-90, 90]), written once as one uint8 memory-mapped
``.npy`` under ``--data-dir`` (by a separate process, so that the row's peak memory and CPU
time are the graph's), clustered by the code path of ``mcvae graph`` (an ``arrays`` config,
``storage: stream``: read a chunk at a time), as one row of
``benchmarks/results/graph_scale_n.json`` and of the ``graph_scale_n`` block. Run each size
in its own process: the peak memory is the process's (``getrusage``'s ``ru_maxrss``).
``--prepare-only`` writes the ``.npy`` and ``DATA_DIR/graph_N.yaml`` only: the config that
``mcvae graph DATA_DIR/graph_N.yaml --out FILE`` runs as a command.

Either way, ``--recall-sample S`` also finds the exact neighbours of ``S`` seeded images
(against all images, on the same features, by wrapping the graph's search) and reports the
share of them the graph's lists hold: the recall of an approximate search (its time is left
out of the row's wall and CPU times).

The graph's settings are pinned to those the rows were measured with (10 neighbours, 13
search poses, a blur of 1 pixel, PCA 64, twice the clusters' spectral dimensions), not left
to the graph's ``auto`` choices, so that a rerun measures the same graph. A run replaces the
row of the same images, settings and search method and keeps the others (read from the
JSON file, never from the page).
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _report import benchmark_parser, command_line, load_result, machine_line, publish  # noqa: E402

from mcvae_framework import build  # noqa: E402
from mcvae_framework.graph import invariant_graph  # noqa: E402
from mcvae_framework.graph.neighbours import exact_neighbours  # noqa: E402
from mcvae_framework.report.evaluation import clustering_metrics  # noqa: E402

#: Fashion-MNIST's classes
CLUSTERS = 10
FASHION_IMAGES = 70_000
#: the block of the ``--images`` rows (the 70,000-image rows go to the parser's, ``graph_scale``)
IMAGES_BLOCK = "graph_scale_n"
#: what every block says of the settings and the times
PINNED = ("The script pins the graph's settings to those the rows name (a blur of 1 pixel for the pixels features "
          "unless a row says otherwise), not the graph's `auto` choices, so that a rerun measures the same graph; "
          "the exact search of `--recall-sample` is left out of the wall and CPU times.")


class RecallProbe:
    """Wraps the graph's neighbour search: after each search, the exact lists of a seeded
    sample of rows are found on the same features (their time kept apart, to be left out of
    the graph's); :meth:`recall` then compares them with the graph's final lists."""

    def __init__(self, sample: int, seed: int = 0):
        self.sample, self.seed = sample, seed
        self.search = invariant_graph.search_neighbours
        self.calls = []  # (rows, the search's lists of them, their exact lists), one per search
        self.seconds = self.cpu = 0.0

    def __call__(self, reference, moved, k, **options):
        indices, values = self.search(reference, moved, k, **options)
        if self.sample:
            start, cpu = time.perf_counter(), time.process_time()
            rng = np.random.default_rng(self.seed)
            rows = torch.as_tensor(np.sort(rng.choice(len(reference), min(self.sample, len(reference)), replace=False)))
            # 64 rows at a time: a chunk holds a (rows, N) matrix
            exact, _ = exact_neighbours(reference, moved, indices.shape[1], rows=rows, chunk_size=64)
            self.calls.append((rows, indices[rows].clone(), exact))
            self.seconds += time.perf_counter() - start
            self.cpu += time.process_time() - cpu
        return indices, values

    def recall(self, graph) -> dict | None:
        """``{"value", "sample"}``: the share of the exact ``k`` neighbours of the sampled images
        that the graph's lists hold (``None`` without a sample)."""
        k = graph.neighbours.shape[1]
        for rows, found, exact in self.calls:
            if torch.equal(found[:, :k], graph.neighbours[rows]):  # the search of the candidate kept
                value = np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found[:, :k].tolist(),
                                                                                exact[:, :k].tolist())])
                return {"value": round(float(value), 4), "sample": len(rows)}
        return None


def rotated_copies(n: int, data_dir: Path) -> tuple[Path, Path]:
    """``n`` rotated copies of Fashion-MNIST's images as one uint8 ``.npy`` and their labels
    (written once; an existing file is kept)."""
    path, label_path = data_dir / f"fashion_rotated_{n}.npy", data_dir / f"fashion_rotated_{n}_labels.npy"
    if path.is_file() and label_path.is_file():
        return path, label_path
    data_dir.mkdir(parents=True, exist_ok=True)
    splits = [build("data", {"type": "fashion_mnist"}, split=s).as_tensors() for s in ("train", "test")]
    images = torch.cat([s["image"] for s in splits])
    labels = torch.cat([s["label"] for s in splits]).numpy()
    group = build("group", {"type": "so2", "angle_deg": [-90, 90]})
    part = Path(str(path) + ".part")
    out = np.lib.format.open_memmap(str(part), mode="w+", dtype=np.uint8, shape=(n, 28, 28))
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
    part.rename(path)
    np.save(label_path, labels[np.arange(n) % FASHION_IMAGES])
    return path, label_path


def graph_options(args) -> dict:
    """The graph's settings (``GraphConfig`` fields), pinned: see the module doc."""
    return {"pca_dim": args.pca_dim, "features": args.features, "embedding_dim": args.embedding_dim,
            "balanced": args.balanced, "neighbour_search": args.neighbour_search, "neighbours": args.neighbours,
            "search_size": args.search_size, "blur_sigma": args.blur_sigma}


def graph_config(path: Path, args) -> dict:
    """The experiment config whose ``mcvae graph`` the ``--images`` rows measure."""
    return {"data": {"type": "arrays", "path": str(path), "storage": "stream"},
            "group": {"type": "so2", "angle_deg": [-90, 90]},
            "encoder": {"type": "conv"}, "decoder": {"type": "mlp"},
            "prior": {"type": "gmm", "n_components": CLUSTERS}, "model": {"z_cluster_dim": CLUSTERS},
            "graph": {"enabled": True, **graph_options(args)},
            "training": {"seed": 0, "out_dir": str(args.data_dir / "run")}}


def prepare(args) -> tuple[Path, Path, Path]:
    """The ``.npy`` of ``--images``, its labels and its ``mcvae graph`` config; with ``--prepare-only``
    written here, otherwise (when missing) by a child process, whose memory and CPU time are
    not this process's."""
    path = args.data_dir / f"fashion_rotated_{args.images}.npy"
    label_path = args.data_dir / f"fashion_rotated_{args.images}_labels.npy"
    if args.prepare_only:
        path, label_path = rotated_copies(args.images, args.data_dir)
    elif not (path.is_file() and label_path.is_file()):
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--images", str(args.images),
                        "--data-dir", str(args.data_dir), "--prepare-only", "--no-doc"], check=True)
    config_path = args.data_dir / f"graph_{args.images}.yaml"
    config_path.write_text(yaml.safe_dump(graph_config(path, args)), encoding="utf-8")
    return path, label_path, config_path


def run_images(args):
    """The ``--images`` mode: rotated copies through ``mcvae graph``'s code path."""
    from mcvae_framework.cli.graph_cmd import graph_dataset
    from mcvae_framework.config.experiment import validate_config
    from mcvae_framework.train.graph_build import build_invariant_graph, dataset_images

    path, label_path, config_path = prepare(args)
    config = validate_config(graph_config(path, args), source=str(config_path))
    start = time.perf_counter()
    images = dataset_images(graph_dataset(config, None), progress="features")
    graph = build_invariant_graph(config, images, build("group", config.group), CLUSTERS, progress=True)
    return graph, np.load(label_path), time.perf_counter() - start


def run_fashion(args):
    """The default mode: the 70,000 images (or ``--limit`` per split), rotated once."""
    data = {"type": "fashion_mnist", "limit": args.limit, "transform": {"group": "so2", "angle_deg": [-90, 90], "seed": 0}}
    splits = [build("data", data, split=split).as_tensors() for split in ("train", "test")]
    images = torch.cat([s["image"] for s in splits])
    labels = torch.cat([s["label"] for s in splits]).numpy()
    group = build("group", {"type": "so2", "angle_deg": [-90, 90]})
    start = time.perf_counter()
    graph = invariant_graph.invariant_graph_clusters(images, group, CLUSTERS, progress=True, **graph_options(args))
    return graph, labels, time.perf_counter() - start


def settings_of(graph, args) -> str:
    """The row's graph settings, as the rows name them."""
    info = graph.info
    blur = f" (blur {info['blur_sigma']:g})" if info["features"] == "pixels" and info["blur_sigma"] != 1.0 else ""
    text = (f"{info['features']}{blur}, PCA {info['feature_dim']}, {info['search_poses']} poses, "
            f"{graph.neighbours.shape[1]} neighbours, {info['embedding_dim']} spectral dims, "
            f"{'balanced' if args.balanced else info.get('kmeans', 'k-means')}")
    return f"{text}, {info['eigensolver']}" if args.images else text


def same_row(a: dict, b: dict) -> bool:
    """Rows a run replaces: the same images, settings and search method."""
    return (a["images"], a["settings"], a["neighbour_search"].split()[0]) == \
        (b["images"], b["settings"], b["neighbour_search"].split()[0])


def main(argv=None) -> dict | None:
    parser = benchmark_parser(__file__, __doc__, "graph_scale")
    parser.add_argument("--limit", type=int, default=None, help="images per split (default: all)")
    parser.add_argument("--images", type=int, default=None,
                        help=f"this many rotated copies instead, memory-mapped (block and result file {IMAGES_BLOCK})")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/mcvae_graph_scale"),
                        help="where --images writes its .npy and graph_N.yaml (kept for the next run)")
    parser.add_argument("--prepare-only", action="store_true",
                        help="with --images: write the .npy and DATA_DIR/graph_N.yaml (its mcvae graph config), then stop")
    parser.add_argument("--pca-dim", type=int, default=64, help="compare in a PCA space of this size")
    parser.add_argument("--features", choices=("pixels", "wavelets"), default="pixels", help="what images are compared by")
    parser.add_argument("--embedding-dim", type=int, default=0, help="spectral dimensions (0: twice the clusters)")
    parser.add_argument("--balanced", action="store_true", help="clusters held to equal sizes")
    parser.add_argument("--neighbour-search", choices=("auto", "exact", "approximate"), default="auto",
                        help="how the neighbours are found (graph.neighbour_search; auto: approximate above 20,000)")
    parser.add_argument("--neighbours", type=int, default=10, help="neighbours of every image (graph.neighbours)")
    parser.add_argument("--search-size", type=int, default=13, help="relative poses tried (graph.search_size)")
    parser.add_argument("--blur-sigma", type=float, default=1.0, help="blur of the pixels features (graph.blur_sigma)")
    parser.add_argument("--recall-sample", type=int, default=0,
                        help="exact neighbour lists of this many seeded images, for the recall (0: none)")
    parser.add_argument("--machine-note", default="", help="appended to the row's machine line, e.g. 'machine shared'")
    parser.add_argument("--note", default="", help="a sentence about the row, printed under the table")
    parser.add_argument("--no-write", dest="no_doc", action="store_true", help="the same as --no-doc")
    args = parser.parse_args(argv)
    if args.prepare_only and not args.images:
        parser.error("--prepare-only needs --images N")
    if args.images:
        args.block = IMAGES_BLOCK
    if args.prepare_only:
        path, _, config_path = prepare(args)
        print(f"wrote {path} and {config_path}")
        return None
    probe = RecallProbe(args.recall_sample)
    invariant_graph.search_neighbours = probe
    try:
        graph, labels, seconds = run_images(args) if args.images else run_fashion(args)
    finally:
        invariant_graph.search_neighbours = probe.search
    usage = resource.getrusage(resource.RUSAGE_SELF)
    info = graph.info
    index = ", ".join(([info["backend"]] if "backend" in info else []) +
                      ([f"nprobe {info['nprobe']}"] if "nprobe" in info else []))
    search = info["neighbour_search"] + (f" ({index})" if index else "")
    row = {"images": len(labels), "settings": settings_of(graph, args), "neighbour_search": search,
           "search_seconds": round(info["neighbour_seconds"], 1),
           # the probe's exact search left out; CPU time is the whole process's (user + system):
           # on a shared, oversubscribed machine the wall time measures the others' load too
           "seconds": round(seconds - probe.seconds, 1),
           "cpu_seconds": round(usage.ru_utime + usage.ru_stime - probe.cpu, 1),
           "peak_mib": round(usage.ru_maxrss / 1024),
           "accuracy": round(float(clustering_metrics(labels, graph.labels.numpy())["accuracy"]), 4),
           "recall": probe.recall(graph),
           "command": command_line(__file__, argv), "machine": machine_line(args.machine_note),
           "note": args.note or None}
    earlier = (load_result(args.block) or {}).get("rows", [])
    rows = [r for r in earlier if not same_row(r, row)] + [row]
    if args.images:
        rows.sort(key=lambda r: r["images"])
    return publish({"command": "python benchmarks/bench_graph_scale.py" + (" --images N" if args.images else "")
                               + " (one run per row)", "rows": rows}, args, argv, machine="one machine line per row")


def _recall(row: dict) -> str:
    recall = row.get("recall")
    return f"{recall['value']:.3f} ({recall['sample']:,} images)" if recall else "--"


def _seconds(value) -> str:
    return "--" if value is None else f"{value:.0f}"


def _wall(row: dict) -> str:
    """Wall time, and the CPU time beside it where it was measured."""
    return f"{row['seconds']:.0f}" + ("" if row["cpu_seconds"] is None else f" (CPU {row['cpu_seconds']:.0f})")


def _where(row: dict) -> str:
    return f"`{row['command']}` -- {row['machine']}"


def _notes(rows: list[dict]) -> list[str]:
    """The rows' notes, each once, in the rows' order."""
    return list(dict.fromkeys(r["note"] for r in rows if r.get("note")))


def render(result: dict) -> str:
    rows = result["rows"]
    if result["block"] == IMAGES_BLOCK:
        lines = [f"| {r['images']:,} | {r['settings']} | {r['neighbour_search']} | {r['search_seconds']:.0f} | "
                 f"{r['seconds']:.0f} | {_seconds(r['cpu_seconds'])} | "
                 f"{r['peak_mib']:.0f} | {r['accuracy']:.3f} | {_recall(r)} | {_where(r)} |" for r in rows]
        prose = ("Rotated copies of Fashion-MNIST's 70,000 images in one uint8 `.npy` file, read a chunk at a time "
                 "(`storage: stream`) through `mcvae graph`'s code path; wall time from the data's opening to the "
                 "clusters; CPU time (user + system) and peak memory (resident set) are the whole process's "
                 "(`getrusage`).")
        return _table("| images | graph | neighbour search | search (s) | wall time (s) | CPU time (s) | "
                      "peak memory (MiB) | accuracy | recall against exact | command -- machine |",
                      "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |", lines, prose, rows)
    lines = [f"| {r['images']:,} | {r['settings']}, {r['neighbour_search']} | {_wall(r)} | {r['peak_mib']:.0f} | "
             f"{r['accuracy']:.3f} | {_recall(r)} | {_where(r)} |" for r in rows]
    prose = ("Peak memory is the whole process's (the 70,000 images and their moved copies included); CPU time "
             "(user + system, the whole process: on a shared machine the wall time also measures the others' load).")
    return _table("| images | graph | wall time (s) | peak memory (MiB) | accuracy (all images) | recall against exact "
                  "| command -- machine |", "| ---: | --- | ---: | ---: | ---: | ---: | --- |", lines, prose, rows)


def _table(header: str, alignment: str, lines: list[str], prose: str, rows: list[dict]) -> str:
    """A block's table, then its prose, the pinned settings and the rows' notes in one paragraph."""
    return "\n".join([header, alignment, *lines, "", " ".join([prose, PINNED, *_notes(rows)])])


if __name__ == "__main__":
    main()
