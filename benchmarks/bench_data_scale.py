"""Time per epoch and peak memory of training as the data grows: 5,000, 20,000 and all
70,000 Fashion-MNIST images, rotated in [-90, 90] degrees (protocol (d)).

    python benchmarks/bench_data_scale.py [--sizes 5000,20000,70000] [--storage stream,memory]
                                          [--threads 2] [--data-only] [--out FILE] [--no-doc]

Every size trains one epoch in a fresh process (peak resident memory only grows within a
process), with the model and loss of ``configs/fashion_mnist_70k.yaml`` but without the
invariant graph (nor the terms that learn from it) and without evaluation, so that the
epoch is the data path and the optimisation steps alone. Up to 60,000 images are the first
N of the training split (class-balanced); 70,000 is the ``all`` split (train and test).
Writes ``benchmarks/results/data_scale.json`` and the ``data_scale`` block of
``docs/benchmarks.md``.

``--data-only`` times the data path alone: one epoch of the trainer's own batch source
(``make_batches``, batches of 64, shuffled) read and moved without a model, written to
``data_scale_data_only.json`` and its block. It needs a small fraction of the CPU a training epoch
needs, so it can be measured on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIG = ROOT / "configs" / "fashion_mnist_70k.yaml"
sys.path.insert(0, str(HERE))

from _report import benchmark_parser, publish  # noqa: E402


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_dataset(n: int, storage: str, threads: int):
    """The config, the data section, the dataset of ``n`` images, its build time and the
    peak memory after building it."""
    import torch

    from mcvae_framework import build, load_config

    torch.set_num_threads(threads)
    config = load_config(CONFIG)
    data = config.data.model_copy(update={"storage": storage, "limit": None if n >= 70_000 else n})
    start = time.perf_counter()
    dataset = build("data", data, split="all" if n >= 70_000 else "train")
    return config, data, dataset, time.perf_counter() - start, peak_mib()


def one_epoch(n: int, storage: str, threads: int) -> dict:
    """Train one epoch on ``n`` images in this process; what the parent prints and records."""
    from mcvae_framework.config.experiment import config_to_dict
    from mcvae_framework.config.sections import without_graph
    from mcvae_framework.train.trainer import Trainer

    config, data, dataset, build_seconds, before = build_dataset(n, storage, threads)
    with tempfile.TemporaryDirectory() as out:
        changes = {"loss": {"pretrain_epochs": 0},
                   "training": {"epochs": 1, "eval_every": 0, "progress": False, "num_threads": threads,
                                "out_dir": out}}
        raw = without_graph(config_to_dict(config.model_copy(update={"data": data})))
        for section, update in changes.items():
            raw[section] = {**raw[section], **update}
        trainer = Trainer(raw, train_dataset=dataset, console=False)
        cpu = time.process_time()
        trainer.run()
        cpu = time.process_time() - cpu
    row = trainer.history[0]
    return {"images": len(dataset), "storage": storage, "kind": type(dataset).__name__,
            "build_s": build_seconds, "epoch_s": row["seconds"], "images_per_s": row["images_per_second"],
            "cpu_s": cpu, "peak_before_training_mib": before, "peak_mib": peak_mib()}


def one_data_epoch(n: int, storage: str, threads: int) -> dict:
    """Read one shuffled epoch of ``n`` images through the trainer's batch source, no model."""
    import torch

    from mcvae_framework.runtime.distributed import DistributedContext
    from mcvae_framework.train.trainer import make_batches

    config, data, dataset, build_seconds, before = build_dataset(n, storage, threads)
    batches = make_batches(dataset, config.training.batch_size, shuffle=True, drop_last=True, seed=0,
                           context=DistributedContext(), device=torch.device("cpu"))
    wall, cpu, seen = time.perf_counter(), time.process_time(), 0
    for batch in batches(0):
        seen += len(batch["image"])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"images": len(dataset), "storage": storage, "kind": type(dataset).__name__, "build_s": build_seconds,
            "epoch_s": wall, "images_per_s": seen / wall, "cpu_s": cpu, "peak_before_training_mib": before,
            "peak_mib": peak_mib()}


def main(argv=None) -> dict:
    parser = benchmark_parser(__file__, __doc__, "data_scale", threads=2)
    parser.add_argument("--sizes", default="5000,20000,70000")
    parser.add_argument("--storage", default="stream", help="comma-separated: stream, memory")
    parser.add_argument("--data-only", action="store_true", help="time the batch source alone, without a model")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process: one size
    args = parser.parse_args(argv)
    if args.one:
        measure = one_data_epoch if args.data_only else one_epoch
        print(json.dumps(measure(args.one, args.storage, args.threads)))
        return {}
    rows = []
    for storage in args.storage.split(","):
        for n in (int(s) for s in args.sizes.split(",")):
            out = subprocess.run([sys.executable, __file__, "--one", str(n), "--storage", storage,
                                  "--threads", str(args.threads)] + ["--data-only"] * args.data_only,
                                 capture_output=True, text=True)
            if out.returncode:
                sys.exit(f"{storage} {n}: failed\n{out.stderr[-3000:]}")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    for row in rows:  # time per image against the smallest size's (1.00: proportional)
        base = min((r for r in rows if r["storage"] == row["storage"]), key=lambda r: r["images"])
        scale = row["images"] / base["images"]
        row["linearity_epoch"] = row["epoch_s"] / (base["epoch_s"] * scale)
        row["linearity_cpu"] = row["cpu_s"] / (base["cpu_s"] * scale)
    if args.data_only:
        args.block = "data_scale_data_only"
    return publish({"rows": rows}, args, argv)


def render(result: dict) -> str:
    """The ``data_scale`` or ``data_scale_data_only`` block."""
    data_only = result["block"] == "data_scale_data_only"
    lines = [
        f"`{result['command']}` -- {result['machine']}.", "",
        ("The data path alone: one shuffled epoch of the trainer's batch source (`make_batches`, batches of 64: "
         "read, padded, moved by each image's pose), no model. " if data_only else
         "One training epoch (the model and loss of `configs/fashion_mnist_70k.yaml`, batches of 64, 4 moved "
         "copies per image; no invariant graph, no evaluation). ") +
        "Each size in a fresh process. *Epoch* is wall "
        "time; *CPU* is the process's CPU time " + ("for the epoch" if data_only else "for the whole run (model "
        "building and two checkpoints included)") + ", which other jobs on a shared machine do not inflate. "
        "*Linearity* divides each by the "
        "smallest size's, scaled to the size (1.00: time exactly proportional to the images). Peak memory is "
        "the process's peak resident set size (torch and the model included); *before training* is after the "
        "dataset was built.", "",
        "| images | storage | epoch (s) | images/s | CPU (s) | linearity, epoch | linearity, CPU | "
        "peak memory before training (MiB) | peak memory (MiB) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [f"| {row['images']:,} | {row['storage']} | {row['epoch_s']:.1f} | {row['images_per_s']:,.0f} | "
              f"{row['cpu_s']:.1f} | {row['linearity_epoch']:.2f} | {row['linearity_cpu']:.2f} | "
              f"{row['peak_before_training_mib']:,.0f} | {row['peak_mib']:,.0f} |" for row in result["rows"]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
