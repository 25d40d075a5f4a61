"""Clustering, pose and canonical-reconstruction quality, side by side, in one process.

    python benchmarks/run_quality.py                       # every protocol and method, 3 seeds
    python benchmarks/run_quality.py --protocols a --methods kmeans,mce_unsupervised --seeds 0,1,2
    python benchmarks/run_quality.py --quick               # smoke run: small data, 2 epochs

Protocols (the data each method sees; the transforms are seeded, so every method and seed
gets the very same images):

* ``a`` -- ``mnist5k``, SO(2), angles in [-90, 90] degrees (MCE-VAE's protocol);
* ``b`` -- ``mnist5k``, SO(2), the full circle;
* ``c`` -- ``mnist5k``, SE(2), [-90, 90] degrees and shifts up to 25% of the side, on a
  40x40 canvas;
* ``d`` -- Fashion-MNIST (10,000 training images), SO(2) in [-90, 90] degrees.

Methods, all trained on the protocol's train split and scored on its test split (except the
transductive ones, which see the test images, unlabelled, beside the training images):

* ``kmeans`` -- k-means on pixels (the floor);
* ``plain_vae_gmm`` -- a plain VAE (no group, standard-normal prior, plain ELBO), then a
  Gaussian mixture fitted to its training latents' means;
* ``vade`` -- VaDE-style: the mixture prior, no group;
* ``mce_supervised`` -- MCE-VAE that also reconstructs the dataset's canonical images;
* ``invariant_graph`` -- the training-free invariant graph (``mcvae_framework.graph.invariant_graph``)
  over the train and test images together (transductive), scored on the test images; its
  rotation error is that of its synchronised angles (what ``loss.pose_guide_weight`` teaches);
* ``mce_unsupervised_no_graph`` -- MCE-VAE with invariance from random group actions only;
* ``mce_unsupervised`` -- the same, guided by the invariant graph (warm start and
  self-labelling; the protocol config's ``graph`` section), trained as the protocol config
  says: the ready configs set ``training.transductive``, so it trains on the train and test
  images together, unlabelled, and is scored on the test images -- the same images and the
  same use of them as the graph row (a clustering of one collection);
* ``mce_unsupervised_inductive`` -- the guided MCE-VAE trained on the training images only
  and scored on test images it never saw (a model reused on new images).

Every MCE-VAE and baseline config is derived from the protocol's ready config in
``configs/`` (same encoder, decoder, latent sizes, epochs), so tuning those configs tunes
the benchmark; :data:`METHODS` is the one table of what each method changes and how it
runs. Results go to ``benchmarks/results/quality.json`` and to the ``quality`` block of
``docs/benchmarks.md``, which is rendered from that file (``render``).
"""

from __future__ import annotations

import copy
import json
import platform
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _report import benchmark_parser, command_line, load_result, publish, seed_list  # noqa: E402

from mcvae_framework import build, validate_config  # noqa: E402
from mcvae_framework.config.experiment import read_config_file  # noqa: E402
from mcvae_framework.report.evaluation import clustering_metrics, evaluate_model, json_safe  # noqa: E402
from mcvae_framework.report.inference import predict_images  # noqa: E402
from mcvae_framework.runtime.data import dataset_tensors  # noqa: E402
from mcvae_framework.config.sections import without_graph  # noqa: E402

PROTOCOLS = {
    "a": {"title": "(a) mnist5k, SO(2), angles in [-90, 90]", "config": "configs/rotated_mnist.yaml"},
    "b": {"title": "(b) mnist5k, SO(2), full circle", "config": "configs/full_circle_mnist.yaml"},
    "c": {"title": "(c) mnist5k, SE(2), [-90, 90] and shifts up to 25% (40x40 canvas)",
          "config": "configs/se2_mnist.yaml"},
    "d": {"title": "(d) Fashion-MNIST (10k training images), SO(2), [-90, 90]",
          "config": "configs/fashion_mnist_student_t.yaml"},
}
#: the issue's goals for the unsupervised MCE-VAE (clustering accuracy on the test split).
TARGETS = {"a": 0.93, "b": 0.85, "c": 0.85, "d": 0.62}


# ----------------------------------------------------------------------- configs


def protocol_config(protocol: str, *, epochs: int | None, quick: bool, device: str) -> dict:
    """The protocol's ready config as a dict, with the run options applied."""
    config = read_config_file(ROOT / PROTOCOLS[protocol]["config"])
    training = config.setdefault("training", {})
    training.update(device=device, progress=False, eval_every=0)
    loss = config.setdefault("loss", {})
    if quick:
        config["data"] = {**config["data"], "limit": 500}
        training["epochs"] = 2
        loss["pretrain_epochs"] = min(1, loss.get("pretrain_epochs", 0))
    if epochs is not None:
        training["epochs"] = epochs
    return config


def method_config(base: dict, name: str, seed: int) -> dict:
    """The experiment config of one method (:data:`METHODS`), derived from the protocol's config."""
    method = METHODS[name]
    # the baselines as they were published: no graph, nor the terms that learn from it
    config = copy.deepcopy(base) if method.guided else without_graph(base)
    config["training"]["seed"] = seed
    if not method.transductive:  # only the graph and its rival see the test images
        config["training"]["transductive"] = False
    if method.mode:
        config.setdefault("loss", {})["mode"] = method.mode
    if not method.group:
        config["group"] = None
    if method.changes:
        method.changes(config)
    return config


def plain_vae(config: dict) -> None:
    """A plain VAE: the standard-normal prior, no style latent, no pretraining."""
    config["prior"] = {"type": "standard_normal"}
    config.setdefault("model", {})["z_style_dim"] = 0
    config["loss"]["pretrain_epochs"] = 0


# ------------------------------------------------------------------------- runs


def peak_memory_mib(device: str) -> float:
    """Peak memory in MiB: CUDA's peak allocation since the last reset on a GPU, else the
    process's peak resident set size so far (it never goes down within one process)."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_kmeans(method, config: dict, datasets: dict, n_clusters: int, work_dir: Path) -> dict:
    """k-means (scikit-learn, 10 restarts) fitted on the training pixels, scored on test."""
    from sklearn.cluster import KMeans

    train, test, seed = datasets["train_tensors"], datasets["test_tensors"], config["training"]["seed"]
    start = time.perf_counter()
    x_train = train["image"].flatten(1).numpy()
    km = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit(x_train)
    wall = time.perf_counter() - start
    clusters = km.predict(test["image"].flatten(1).numpy())
    # no images/s: k-means is not trained by epochs, its fit time is in `train s`
    return {"clustering": clustering_metrics(test["label"].numpy(), clusters, n_clusters=n_clusters),
            "train_seconds": wall}


def run_invariant_graph(method, config_dict: dict, datasets: dict, n_clusters: int, work_dir: Path) -> dict:
    """The training-free invariant graph over the train and test images together
    (transductive: the test images are clustered with the training images as context),
    scored on the test images; the protocol config's ``graph`` section sets its options."""
    from mcvae_framework.graph.invariant_graph import invariant_graph_clusters

    train, test, seed = datasets["train_tensors"], datasets["test_tensors"], config_dict["training"]["seed"]
    config = validate_config(config_dict, source="invariant_graph config")
    group = build("group", config.group)
    images = torch.cat([train["image"], test["image"]])
    graph = invariant_graph_clusters(images, group, n_clusters, config.graph, seed=seed)
    n_train = len(train["image"])  # the test images follow the training images
    clusters = graph.labels[n_train:].numpy()
    report = {"clustering": clustering_metrics(test["label"].numpy(), clusters, n_clusters=n_clusters),
              "train_seconds": graph.seconds}
    if graph.angles is not None and "pose" in test:
        report["pose"] = graph_rotation_error(group, graph.angles[n_train:], test["pose"], clusters)
    return report


def graph_rotation_error(group, angles: torch.Tensor, true_pose: torch.Tensor, clusters) -> dict:
    """The rotation error of the graph's synchronised angles (what ``loss.pose_guide_weight``
    teaches the pose head), measured as the MCE-VAE's pose is: after the best offset per
    cluster. Only the rotation is compared (the graph gives no other pose coordinate), so
    both poses keep their angle coordinate and zeros elsewhere."""
    from mcvae_framework.report.pose_evaluation import pose_metrics

    column = group.angle_coordinates[0]
    predicted = torch.zeros(len(angles), group.dim, dtype=torch.float64)
    predicted[:, column] = angles.double()
    true = torch.zeros_like(predicted)
    true[:, column] = true_pose.double().reshape(len(angles), -1)[:, column]
    metrics = pose_metrics(group, predicted, true, clusters)
    metrics.pop("_offsets", None)
    for block in ("raw", "per_cluster_offset"):  # the zeroed coordinates' errors say nothing
        metrics[block] = {key: value for key, value in metrics[block].items() if key.startswith("rotation")}
    metrics["primary_error"] = "rotation_deg"
    return metrics


def run_model(method, config_dict: dict, datasets: dict, n_clusters: int, work_dir: Path) -> dict:
    """Train one method with the trainer's API and score it on the test split."""
    from mcvae_framework.train.trainer import Trainer

    config = validate_config(config_dict, source=f"{method.title} config")
    trainer = Trainer(config, out_dir=work_dir, overwrite=True, console=False,
                      train_dataset=datasets["train"], test_dataset=datasets["test"])
    trainer.run()
    model = trainer.model.eval()
    report = evaluate_model(model, config, datasets["test"], n_actions=2, with_elbo=False,
                            seed=config.training.seed)
    if method.clusters_from_latents:
        report["clustering"] = gmm_on_latents(model, datasets, n_clusters, config.training.seed)
    return {**report, "train_seconds": trainer.summary["wall_seconds"],
            "images_per_second": trainer.summary["images_per_second"]}


def gmm_on_latents(model, datasets, n_clusters: int, seed: int) -> dict:
    """A Gaussian mixture fitted to the training latents' means, scored on the test split."""
    from sklearn.mixture import GaussianMixture

    train = predict_images(model, datasets["train_tensors"]["image"])["z_cluster"].double().numpy()
    test = predict_images(model, datasets["test_tensors"]["image"])["z_cluster"].double().numpy()
    gmm = GaussianMixture(n_components=n_clusters, covariance_type="full", n_init=3, random_state=seed).fit(train)
    labels = datasets["test_tensors"]["label"].numpy()
    return clustering_metrics(labels, gmm.predict(test), n_clusters=n_clusters)


@dataclass(frozen=True)
class Method:
    """One method of the benchmark: its row's title, how its config differs from the
    protocol's, and how it runs (``run(method, config, datasets, n_clusters, work_dir)``)."""

    title: str
    run: Callable[..., dict]
    #: ``loss.mode`` of the model (``None``: the protocol config's).
    mode: str | None = None
    #: keeps the protocol config's invariant graph and the loss terms that learn from it.
    guided: bool = False
    #: trains on the test images too, unlabelled, as the protocol config says (else never).
    transductive: bool = False
    #: keeps the group (``False``: no pose latent, as a plain VAE or VaDE).
    group: bool = True
    #: further changes of the config.
    changes: Callable[[dict], None] | None = None
    #: clusters by a Gaussian mixture fitted to the training latents, not by the prior.
    clusters_from_latents: bool = False


#: Every method, in the order of the tables.
METHODS = {
    "kmeans": Method("k-means on pixels", run_kmeans),
    "invariant_graph": Method("invariant graph (no training; transductive)", run_invariant_graph,
                              mode="unsupervised", guided=True, transductive=True),
    "plain_vae_gmm": Method("plain VAE + GMM", run_model, mode="plain", group=False, changes=plain_vae,
                            clusters_from_latents=True),
    "vade": Method("VaDE-style (mixture prior, no group)", run_model, mode="plain", group=False),
    "mce_supervised": Method("MCE-VAE, supervised", run_model, mode="supervised"),
    "mce_unsupervised_no_graph": Method("MCE-VAE, unsupervised, without the graph", run_model, mode="unsupervised"),
    "mce_unsupervised_inductive": Method("MCE-VAE, unsupervised, inductive", run_model, mode="unsupervised",
                                         guided=True),
    "mce_unsupervised": Method("MCE-VAE, unsupervised (transductive, like the graph)", run_model,
                               mode="unsupervised", guided=True, transductive=True),
}
#: the method the protocol's goal is checked on, and the one it should beat.
GOAL_METHOD, GRAPH_METHOD = "mce_unsupervised", "invariant_graph"


def record(protocol: str, method: str, seed: int, report: dict, peak_mib: float, wall: float) -> dict:
    """The figures of one run that the tables and the JSON keep."""
    clustering = report["clustering"]
    pose = report.get("pose", {})
    canonical = report.get("canonical", {})
    aligned = pose.get("per_cluster_offset", {})
    return {
        "protocol": protocol, "method": method, "seed": seed,
        "accuracy": clustering["accuracy"], "nmi": clustering["nmi"], "ari": clustering["ari"],
        "clusters_used": clustering.get("clusters_used"),
        "rotation_error_deg_median": aligned.get("rotation_deg", {}).get("median"),
        "pose_error_key": pose.get("primary_error"),
        "pose_error_median": aligned.get(pose.get("primary_error") or "", {}).get("median"),
        "rotation_error_deg_median_raw": pose.get("raw", {}).get("rotation_deg", {}).get("median"),
        "translation_error_median": aligned.get("translation", {}).get("median"),
        "canonical_mse": canonical.get("mse_offset_aligned", canonical.get("mse")),
        "canonical_mse_raw": canonical.get("mse"),
        "invariance_z_cluster": report.get("invariance", {}).get("z_cluster_relative_change"),
        "train_images_per_second": report.get("images_per_second"),
        "train_seconds": report.get("train_seconds"),
        "wall_seconds": wall,
        "peak_memory_mib": peak_mib,
    }


def protocol_datasets(base: dict) -> dict:
    """The protocol's train and test datasets, and each as tensors (``train_tensors``, ``test_tensors``)."""
    data = {split: build("data", base["data"], split=split) for split in ("train", "test")}
    return {**data, "train_tensors": dataset_tensors(data["train"]), "test_tensors": dataset_tensors(data["test"])}


def run_protocol(protocol: str, methods, seeds, args, work_root: Path) -> list[dict]:
    base = protocol_config(protocol, epochs=args.epochs, quick=args.quick, device=args.device)
    datasets = protocol_datasets(base)
    n_clusters = int(datasets["train"].n_classes)
    rows = []
    for name in methods:
        for seed in seeds:
            if args.device.startswith("cuda") and torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            config = method_config(base, name, seed)
            report = METHODS[name].run(METHODS[name], config, datasets, n_clusters,
                                       work_root / f"{protocol}_{name}_{seed}")
            wall = time.perf_counter() - start
            rows.append(record(protocol, name, seed, report, peak_memory_mib(args.device), wall))
            # how it used the test images: kept with the row for later runs
            rows[-1]["transductive"] = bool(config["training"].get("transductive"))
            print(f"[{protocol}] {name:17s} seed {seed}: accuracy {rows[-1]['accuracy']:.3f}, "
                  f"NMI {rows[-1]['nmi']:.3f}, {wall:.0f} s", flush=True)
    return rows


# ------------------------------------------------------------------------ report

COLUMNS = [
    ("accuracy", "accuracy", 3), ("nmi", "NMI", 3), ("ari", "ARI", 3),
    ("rotation_error_deg_median", "rot. error (deg, median, offset removed)", 1),
    ("canonical_mse", "canonical MSE", 4),
    ("train_images_per_second", "train img/s", 0), ("train_seconds", "train s", 0),
    ("peak_memory_mib", "peak mem (MiB)", 0),
]


def earlier_rows(earlier: dict | None) -> list[dict]:
    """The rows of an earlier result, each tagged with its command and machine line
    (``earlier``) unless it already carries one."""
    if not earlier:
        return []
    tag = f"`{earlier.get('command', '?')}` ({earlier.get('machine', '?')})"
    return [{**row, "earlier": row.get("earlier") or tag} for row in earlier.get("runs", []) if row["method"] in METHODS]


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and standard deviation (ddof 1) over seeds per (protocol, method)."""
    out = []
    keys = sorted({(r["protocol"], r["method"]) for r in rows}, key=lambda k: (k[0], list(METHODS).index(k[1])))
    for protocol, method in keys:
        group = [r for r in rows if r["protocol"] == protocol and r["method"] == method]
        entry = {"protocol": protocol, "method": method, "seeds": [r["seed"] for r in group]}
        if group[0].get("earlier"):
            entry["earlier"] = group[0]["earlier"]
        for key, _, _ in COLUMNS + [("translation_error_median", "", 0), ("invariance_z_cluster", "", 0)]:
            values = np.array([r[key] for r in group if r.get(key) is not None], dtype=float)
            if len(values):
                entry[key] = {"mean": float(values.mean()),
                              "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}
        out.append(entry)
    return out


def mean_sd_cell(stat: dict | None, digits: int) -> str:
    if not stat:
        return "-"
    if digits == 0:
        return f"{stat['mean']:.0f} ± {stat['std']:.0f}"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def render(result: dict) -> str:
    """The ``quality`` block, from a result file."""
    summary, options = result["summary"], result["options"]
    lines = [f"Command: `{result['command']}`", "", f"Machine: {result['machine']}", "",
             f"Mean ± standard deviation over seeds {options['seeds']}; every method is scored on the "
             "protocol's test split; the transductive rows (the graph, and the MCE-VAE row that says so) "
             "also see the test images, unlabelled, beside the training images, the others train on "
             "the train split alone. Rotation errors are the group "
             "distance after removing the best constant pose offset per cluster (the graph's are those "
             "of its synchronised angles, which the pose-guidance term teaches); canonical MSE "
             "compares the decoded canonical image, moved by that offset, with the true canonical "
             "image (per pixel, images in [0, 1]). Peak memory is the process's peak resident set "
             "size so far on a CPU (it only grows within one process), CUDA's peak allocation on a "
             "GPU.", ""]
    if options.get("quick"):
        lines += ["**Quick mode** (500 images per split, 2 epochs): a smoke run, not a measurement.", ""]
    header = "| method | " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    for protocol in sorted({s["protocol"] for s in summary}):
        lines += [f"### {PROTOCOLS[protocol]['title']}", "", header,
                  "| --- | " + " | ".join("---" for _ in COLUMNS) + " |"]
        earlier = set()
        for entry in (s for s in summary if s["protocol"] == protocol):
            cells = [mean_sd_cell(entry.get(key), digits) for key, _, digits in COLUMNS]
            mark = " (earlier)" if entry.get("earlier") else ""
            earlier.update([entry["earlier"]] if entry.get("earlier") else [])
            lines.append(f"| {METHODS[entry['method']].title}{mark} | " + " | ".join(cells) + " |")
        for tag in sorted(earlier):
            lines += ["", f"(earlier): not rerun; from {tag}, with the configs of that time."]
        unsup = next((s for s in summary if s["protocol"] == protocol and s["method"] == GOAL_METHOD), None)
        graph = next((s for s in summary if s["protocol"] == protocol and s["method"] == GRAPH_METHOD), None)
        if unsup and "accuracy" in unsup:
            reached = unsup["accuracy"]["mean"]
            verdict = "reached" if reached >= TARGETS[protocol] else "not reached"
            lines += ["", f"Goal for the unsupervised MCE-VAE: accuracy >= {TARGETS[protocol]:.2f}; "
                          f"measured {reached:.3f} ({verdict})."]
            if graph and "accuracy" in graph:
                beats = "beats" if reached > graph["accuracy"]["mean"] else "does not beat"
                lines[-1] += f" It {beats} the invariant graph ({graph['accuracy']['mean']:.3f})."
        lines.append("")
    return "\n".join(lines)


# -------------------------------------------------------------------------- main


def _list(text: str, allowed=None, kind: str = "value") -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if allowed is not None:
        bad = [t for t in items if t not in allowed]
        if bad:
            raise SystemExit(f"unknown {kind} {', '.join(bad)}; choose from {', '.join(allowed)}")
    return items


def parse_args(argv=None):
    parser = benchmark_parser(__file__, __doc__, "quality", seeds="0,1,2")
    parser.add_argument("--protocols", default="a,b,c,d", help="comma-separated subset of a,b,c,d")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    parser.add_argument("--epochs", type=int, default=None, help="ELBO epochs (default: the protocol config's)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 500 images per split, 2 epochs")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--keep-runs", default=None, help="keep the run folders here (default: a temporary folder)")
    parser.add_argument("--merge", default=None,
                        help="comma-separated result files of runs made apart (e.g. one seed per process, each "
                        "with its own --out and --no-doc): their rows are written as if this run had measured "
                        "them; nothing is trained")
    parser.add_argument("--keep-earlier", action="store_true",
                        help="keep the rows of methods not rerun from the earlier result (--out, else the "
                        "committed one) in the table, marked as earlier results with their command and date")
    args = parser.parse_args(argv)
    args.protocol_list = _list(args.protocols, PROTOCOLS, "protocol")
    args.method_list = _list(args.methods, METHODS, "method")
    args.seed_list = seed_list(args)
    return args


def save(rows: list[dict], earlier: list[dict], args, argv, command: str, options: dict, started: float) -> dict:
    """The result of ``rows`` (and the earlier rows of methods not rerun), written by
    :func:`_report.publish`: JSON, and the docs block unless ``--no-doc``."""
    rerun = {(r["protocol"], r["method"]) for r in rows}
    kept = [r for r in earlier if (r["protocol"], r["method"]) not in rerun]
    result = json_safe({"command": command, "python": platform.python_version(), "options": options,
                        "total_seconds": time.perf_counter() - started, "summary": summarise(rows + kept),
                        "runs": rows + kept})
    return publish(result, args, argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    command = command_line(__file__, argv)
    options = {"protocols": args.protocol_list, "methods": args.method_list, "seeds": args.seed_list,
               "epochs": args.epochs, "quick": args.quick, "device": args.device}
    started = time.perf_counter()
    if args.keep_earlier:
        earlier = earlier_rows(json.loads(Path(args.out).read_text(encoding="utf-8")) if args.out and
                               Path(args.out).is_file() else load_result("quality"))
    else:
        earlier = []
    rows: list[dict] = []
    if args.merge:
        commands = []
        for path in _list(args.merge):
            part = json.loads(Path(path).read_text(encoding="utf-8"))
            rows += part["runs"]
            commands.append(part["command"])
        return save(rows, earlier, args, argv, " ; ".join(commands), {**options, "merged": _list(args.merge)}, started)
    result = None
    with tempfile.TemporaryDirectory(prefix="mcvae_quality_") as tmp:
        work_root = Path(args.keep_runs) if args.keep_runs else Path(tmp)
        for protocol in args.protocol_list:
            rows += run_protocol(protocol, args.method_list, args.seed_list, args, work_root)
            # written after every protocol, so that a long run that is stopped keeps what it measured
            result = save(rows, earlier, args, argv, command, options, started)
    return result


if __name__ == "__main__":
    main()
