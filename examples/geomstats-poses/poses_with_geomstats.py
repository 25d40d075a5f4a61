"""Load the poses `mcvae predict` wrote and run geomstats tools on them.

    mcvae predict runs/se2_mnist --data configs/se2_mnist.yaml --out predictions.npz
    python examples/geomstats-poses/poses_with_geomstats.py predictions.npz --k-means 3

The ``.npz`` holds every pose as a group element: ``pose_matrix`` (homogeneous ``3 x 3``
matrices), ``pose_geomstats`` (the same poses as points of the group's geomstats space,
e.g. ``SpecialEuclidean(2)``) and ``pose_group`` (the group's tag). This script builds
that space through the framework (the group names it: ``LieGroup.geomstats_space``),
then, per predicted cluster, asks geomstats for the mean pose (``FrechetMean`` where the
space has a metric, ``ExponentialBarycenter`` for a Lie group without one) and the
spread around it, and, for spaces with a metric, clusters all poses with geomstats'
``RiemannianKMeans`` (for a space without one, ``k_means`` says it was skipped and why).
It prints one JSON object.

geomstats' numpy backend is used unless ``GEOMSTATS_BACKEND`` says otherwise (the
arrays from the ``.npz`` are numpy arrays, which that backend takes as they are).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("GEOMSTATS_BACKEND", "numpy")

import numpy as np  # noqa: E402

from mcvae_framework import build  # noqa: E402
from mcvae_framework.geomstats_bridge import (  # noqa: E402
    float64_scope,
    geomstats_space_of,
    import_geomstats,
    space_name,
)


def analyse(path: str, k_means: int = 0, max_points: int = 200, seed: int = 0) -> dict:
    """Per-cluster geomstats means (and an optional Riemannian k-means) of the poses in
    the predictions file ``path``."""
    saved = np.load(path)
    if "pose_geomstats" not in saved.files:
        raise SystemExit(f"{path} has no pose_geomstats: its group names no geomstats space "
                         "(or it was written without a group)")
    geomstats = import_geomstats()
    group = build("group", {"type": str(saved["pose_group"])})
    space = geomstats_space_of(group)
    points, clusters = saved["pose_geomstats"], saved["cluster"]
    convert = (lambda a: a) if geomstats.backend == "numpy" else (lambda a: geomstats.gs.array(a))
    has_metric = getattr(space, "metric", None) is not None
    out = {"space": space_name(space), "n_poses": int(len(points)), "clusters": {}}
    rng = np.random.default_rng(seed)
    with float64_scope():
        for c in np.unique(clusters):
            members = points[clusters == c]
            if len(members) > max_points:  # geomstats' logarithms run one matrix at a time
                members = members[rng.choice(len(members), max_points, replace=False)]
            x = convert(members)
            estimator = geomstats.FrechetMean(space) if has_metric else geomstats.ExponentialBarycenter(space)
            mean = estimator.fit(x).estimate_
            if has_metric:
                spread = float(np.sqrt(np.mean(np.asarray(space.metric.squared_dist(x, mean)))))
            else:
                logs = np.asarray(space.log(space.compose(space.inverse(mean), x)))
                spread = float(np.sqrt(np.mean(np.sum(logs.reshape(len(logs), -1) ** 2, axis=1))))
            out["clusters"][str(int(c))] = {
                "n": int((clusters == c).sum()),
                "mean": np.asarray(mean).round(6).tolist(),
                "in_space": bool(np.all(np.asarray(space.belongs(mean)))),
                "dispersion": spread,
            }
        if k_means and has_metric:
            from geomstats.learning.kmeans import RiemannianKMeans

            x = points[: max_points]
            init = x[np.linspace(0, len(x) - 1, k_means).round().astype(int)]
            kmeans = RiemannianKMeans(space, n_clusters=k_means, init=convert(init), max_iter=10)
            kmeans.fit(convert(x))
            labels = np.asarray(kmeans.labels_)
            out["k_means"] = {"k": k_means, "sizes": np.bincount(labels, minlength=k_means).tolist()}
        elif k_means:
            out["k_means"] = {"k": k_means, "skipped": f"RiemannianKMeans needs a metric; geomstats' "
                                                       f"{out['space']} is built without one"}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", help="an .npz file written by `mcvae predict`")
    parser.add_argument("--k-means", type=int, default=0, help="also run RiemannianKMeans with this many clusters")
    parser.add_argument("--max-points", type=int, default=200, help="poses per cluster given to geomstats")
    args = parser.parse_args(argv)
    json.dump(analyse(args.predictions, args.k_means, args.max_points), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
