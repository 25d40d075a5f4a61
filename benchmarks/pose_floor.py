"""How far upright digits sit from their own class's template in rotation.

The pose the benchmark scores is the rotation the protocol applied to an upright digit. But
upright digits are not all upright alike: people slant their handwriting. An image carries
no mark of which part of its orientation is the applied rotation and which is the writer's
slant, so a model that aligns every image of a cluster to one canonical template, however
exact, is off by the image's slant from that template. This script measures that slant on the
*unrotated* test digits of mnist5k: each digit is registered to its class template (the
class mean, re-estimated from the registered digits three times) by the best cosine
similarity over rotations in [-45, 45] degrees in 1-degree steps (the group's own action
moves the images); the median absolute deviation from the class's mean angle is what the
per-cluster-offset rotation error keeps when a model aligns every image of a cluster to one
template. (A model shown the true upright images, as the supervised one is, can learn the
slant as style and go below it.) Writes ``benchmarks/results/pose_floor.json`` and the
``pose_floor`` block.

    python benchmarks/pose_floor.py [--out FILE] [--no-doc]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import benchmark_parser, publish  # noqa: E402

from mcvae_framework import build  # noqa: E402


def slant_from_template(images: torch.Tensor, group, grid: torch.Tensor, rounds: int = 3) -> torch.Tensor:
    """Each image's rotation (radians) from its class template, centred on the class mean.

    :param group: the ``so2`` group, whose action rotates the images.
    :param grid: ``(M,)`` candidate angles (radians)."""
    template = images.mean(0, keepdim=True)
    unit = F.normalize(images.flatten(1), dim=1)
    for _ in range(rounds):
        moved = group.act(template.expand(len(grid), -1, -1, -1), group.exp(grid[:, None]))
        best = grid[(unit @ F.normalize(moved.flatten(1), dim=1).T).argmax(1)]
        # the template of the registered images: each moved back by its angle
        template = group.act(images, group.exp(-best[:, None])).mean(0, keepdim=True)
    return best - best.mean()


def main(argv=None) -> dict:
    args = benchmark_parser(__file__, __doc__, "pose_floor").parse_args(argv)
    data = build("data", {"type": "mnist5k"}, split="test").as_tensors()
    images, labels = data["image"].float(), data["label"]
    group = build("group", {"type": "so2", "angle_deg": [-180, 180]})
    grid = torch.deg2rad(torch.arange(-45.0, 45.5, 1.0))
    rows, every = [], []
    for digit in labels.unique().tolist():
        deviation = torch.rad2deg(slant_from_template(images[labels == digit], group, grid)).abs()
        every.append(deviation)
        rows.append({"digit": digit, "images": len(deviation), "median_deviation_deg": float(deviation.median())})
    every = torch.cat(every)
    return publish({"rows": rows, "all": {"images": len(every), "median_deviation_deg": float(every.median())}},
                   args, argv)


def render(result: dict) -> str:
    rows = [f"| {r['digit']} | {r['images']} | {r['median_deviation_deg']:.1f} |"
            for r in [*result["rows"], {**result["all"], "digit": "all"}]]
    return "\n".join([
        f"`{result['command']}` on {result['machine']}.", "",
        "Unrotated mnist5k test digits, each registered to its class template by rotation; the median "
        "absolute deviation of each digit's angle from its class's mean angle (degrees).", "",
        "| digit | images | median deviation (deg) |", "| --- | ---: | ---: |", *rows])


if __name__ == "__main__":
    main()
