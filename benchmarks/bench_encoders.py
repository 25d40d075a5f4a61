"""The same MCE-VAE with two encoders: does the rotation-equivariant ``rotconv`` earn its cost?

Every row trains a quality-benchmark method (``run_quality.py``'s configs, its evaluation) on
one protocol with only ``encoder.type`` changed, so the losses, epochs and data are the same
(the encoder the protocol config names keeps that config's settings; the other gets its defaults).
The default compares ``conv`` and ``rotconv`` on protocol (b), the full circle, where a
regressed angle has the most to lose, in two settings:

* ``mce_unsupervised_no_graph`` -- the model alone, no graph guidance (the encoder's own merit);
* ``mce_unsupervised`` -- the protocol's ready config (graph, refinement where configured).

One process per (encoder, method, seed) keeps the slow runs apart; each writes its own file
under ``benchmarks/results/encoders/``, and ``--report`` gathers them into
``benchmarks/results/encoder_quality.json`` and the ``encoder_quality`` block of
docs/benchmarks.md:

    python benchmarks/bench_encoders.py --encoders conv --methods mce_unsupervised_no_graph --seeds 0
    python benchmarks/bench_encoders.py --report
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run_quality as quality  # noqa: E402
from _report import benchmark_parser, machine_line, publish, seed_list  # noqa: E402


RESULTS = HERE / "results" / "encoders"


def encoder_section(configured: dict, encoder: str) -> dict:
    """The encoder section a row trains with: the protocol config's own section when it
    already names ``encoder`` (so its settings, e.g. rotconv's ``readout``, are what is
    measured), else ``{"type": encoder}`` with that encoder's defaults (another type's
    settings would not validate)."""
    return dict(configured) if configured.get("type") == encoder else {"type": encoder}


def run_one(protocol: str, encoder: str, method: str, seed: int, epochs: int | None,
            keep_runs: str | None = None) -> dict:
    base = quality.protocol_config(protocol, epochs=epochs, quick=False, device="cpu")
    base["encoder"] = encoder_section(base.get("encoder") or {}, encoder)
    datasets = quality.protocol_datasets(base)
    config = quality.method_config(base, method, seed)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mcvae_encoders_") as tmp:
        work = Path(keep_runs) / f"{protocol}_{method}_{encoder}_{seed}" if keep_runs else Path(tmp)
        report = quality.run_model(quality.METHODS[method], config, datasets, int(datasets["train"].n_classes), work)
    row = quality.record(protocol, method, seed, report, quality.peak_memory_mib("cpu"), time.perf_counter() - start)
    return {**row, "encoder": encoder, "epochs": config["training"]["epochs"], "machine": machine_line()}


def gathered_runs() -> list[dict]:
    """Every run's file, for ``--report``."""
    rows = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(RESULTS.glob("*.json"))]
    if not rows:
        raise SystemExit(f"no results in {RESULTS}: run some encoders first")
    return rows


def render(result: dict) -> str:
    rows = result["rows"]
    keys = sorted({(r["protocol"], r["method"], r["encoder"]) for r in rows})
    lines = ["Command: `python benchmarks/bench_encoders.py --encoders E --methods M --seeds S` per row and seed "
             "(one process each), then `python benchmarks/bench_encoders.py --report`.", "",
             f"Machine of the latest run: {result['machine']}. Runs made side by side: the accuracies "
             "compare, the times only roughly (the training-speed block times the encoders alone).", "",
             "| protocol | method | encoder | seeds | accuracy | clusters used (per seed) "
             "| rot. error (deg, median, offset removed) | train s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for protocol, method, encoder in keys:
        group = sorted((r for r in rows if (r["protocol"], r["method"], r["encoder"]) == (protocol, method, encoder)),
                       key=lambda r: r["seed"])
        stats = quality.summarise(group)[0]  # mean and standard deviation over the seeds
        mark = " *" if any("source" in r for r in group) else ""
        lines.append(f"| ({protocol}) | {quality.METHODS[method].title} | `{encoder}`{mark} | "
                     f"{','.join(str(r['seed']) for r in group)} | "
                     f"{quality.mean_sd_cell(stats.get('accuracy'), 3)} | "
                     f"{', '.join(str(r.get('clusters_used', '?')) for r in group)} | "
                     f"{quality.mean_sd_cell(stats.get('rotation_error_deg_median'), 1)} | "
                     f"{quality.mean_sd_cell(stats.get('train_seconds'), 0)} |")
    sources = sorted({r["source"] for r in rows if "source" in r})
    if sources:  # rows copied from the quality benchmark, which ran the same config
        lines += ["", "\\* the quality benchmark's runs of the same config, copied from its results: "
                  + "; ".join(f"`{source}`" for source in sources)]
    return "\n".join(lines)


def main(argv=None) -> dict | None:
    parser = benchmark_parser(__file__, __doc__, "encoder_quality", seeds="0,1,2")
    parser.add_argument("--protocol", default="b", choices=sorted(quality.PROTOCOLS))
    parser.add_argument("--encoders", default="conv,rotconv")
    parser.add_argument("--methods", default="mce_unsupervised_no_graph,mce_unsupervised")
    parser.add_argument("--epochs", type=int, default=None, help="ELBO epochs (default: the protocol config's)")
    parser.add_argument("--keep-runs", default=None, help="keep the run folders here (default: a temporary folder)")
    parser.add_argument("--report", action="store_true", help="gather the result files into the docs block; train nothing")
    args = parser.parse_args(argv)
    if args.report:
        rows = gathered_runs()
        latest = max((r["machine"] for r in rows), key=lambda m: m[-20:])
        return publish({"rows": rows}, args, argv, machine=latest)
    RESULTS.mkdir(parents=True, exist_ok=True)
    for encoder in args.encoders.split(","):
        for method in args.methods.split(","):
            if method not in quality.METHODS:
                raise SystemExit(f"--methods: unknown method {method!r}; choose from {', '.join(quality.METHODS)}")
            for seed in seed_list(args):
                row = run_one(args.protocol, encoder, method, seed, args.epochs, args.keep_runs)
                path = Path(args.out) if args.out else RESULTS / f"{args.protocol}_{method}_{encoder}_{seed}.json"
                path.write_text(json.dumps(quality.json_safe(row), indent=2) + "\n", encoding="utf-8")
                print(f"({args.protocol}) {method} {encoder} seed {seed}: accuracy {row['accuracy']:.3f}, "
                      f"rotation error {row['rotation_error_deg_median']}", flush=True)
    return None


if __name__ == "__main__":
    main()
