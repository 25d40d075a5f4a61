"""The notebook interface against the command line: ``InvariantClustering().fit_predict``
on the quickstart's images (mnist5k rotated in [-90, 90] degrees, seed 0) with its
default settings, scored like ``mcvae evaluate`` scores ``mcvae train
configs/quickstart.yaml`` (Hungarian accuracy).

    python benchmarks/estimator_quickstart.py --run-dir runs/estimator_quickstart

It prints (and writes to ``RUN_DIR/estimator_accuracy.json``) the accuracy on all 5,000
images and on the quickstart's 1,000 test images (the images ``mcvae evaluate`` scores).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]


def quickstart_images():
    """The quickstart's moved images (every image, in source order), labels and splits."""
    from mcvae_framework import build
    from mcvae_framework.runtime.data import dataset_tensors

    data = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text(encoding="utf-8"))["data"]
    dataset = build("data", data, split="all")
    tensors = dataset_tensors(dataset)
    return tensors["image"].numpy(), tensors["label"].numpy(), np.asarray(dataset.item_splits)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "estimator_quickstart")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="training.num_threads (default: torch's)")
    args = parser.parse_args(argv)

    from mcvae_framework.estimator import InvariantClustering
    from mcvae_framework.report.evaluation import hungarian_accuracy

    images, labels, splits = quickstart_images()
    estimator = InvariantClustering(random_state=args.seed, run_dir=args.run_dir, num_threads=args.threads)
    start = time.perf_counter()
    clusters = estimator.fit_predict(images)
    seconds = time.perf_counter() - start
    test = splits == "test"
    result = {"accuracy_all": hungarian_accuracy(labels, clusters)[0],
              "accuracy_test": hungarian_accuracy(labels[test], clusters[test])[0],
              "n_images": int(len(images)), "n_test": int(test.sum()), "seed": args.seed,
              "seconds": round(seconds, 1), "estimator": repr(estimator)}
    (Path(args.run_dir) / "estimator_accuracy.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
