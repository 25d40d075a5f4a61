"""Time the groups' hot path, ``exp`` + ``act``, beside the geomstats path.

For each built-in group: a batch of 256 single-channel 28x28 images on the CPU, poses
drawn by the group's ``sample``. *Ours* is the plugin's closed-form ``exp`` followed by
its ``act``. *geomstats* is the reference exponential (``SpecialOrthogonal(2)`` /
``SpecialEuclidean(2)`` ``exp``, or ``GeneralLinear.exp`` of the algebra matrix for the
scaled groups, and for ``affine2`` the product of the ``GeneralLinear.exp`` of its chart's
three factors; float64, geomstats' default) followed by the textbook warp
(``torch.linalg.inv``, ``affine_grid``, ``grid_sample``: the same bilinear sampling, so
the same images out, checked). Each figure is the median of several repeats after a
warm-up, forward only and with the backward pass to ``tau``. Writes
``benchmarks/results/groups.json`` and the ``groups`` block of docs/benchmarks.md.

    python benchmarks/bench_groups.py [--repeats 30] [--threads N] [--out FILE] [--no-doc]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import benchmark_parser, publish  # noqa: E402

from mcvae_framework import build  # noqa: E402
from mcvae_framework.testing import geomstats_reference as ref  # noqa: E402

TAGS = ("so2", "se2", "scale_rotation", "sim2", "affine2")
BATCH, SIDE = 256, 28


def median_seconds(fns: dict, repeats: int, warmup: int = 3) -> dict:
    """Median wall time of each callable; the callables take turns, so that a noisy
    machine slows them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def geomstats_exp(tag: str, tau: torch.Tensor) -> torch.Tensor:
    """The reference exponential of each group, as ``(N, 3, 3)`` float64 matrices."""
    tau = tau.to(torch.float64)
    theta = tau[:, 0]
    if tag == "so2":
        out = torch.eye(3, dtype=torch.float64).repeat(len(tau), 1, 1)
        out[:, :2, :2] = ref.so2_exp(theta)
        return out
    if tag == "se2":
        return ref.se2_exp(tau)
    if tag == "scale_rotation":
        return ref.matrix_exp(ref.planar_algebra_matrix(theta, tau[:, 1]))
    if tag == "affine2":
        # T(t) . exp(theta J + s I) . exp(P): the chart of the second kind, factor by factor
        shift = torch.zeros(len(tau), 3, 3, dtype=torch.float64)
        stretch = torch.zeros_like(shift)
        shift[:, :2, 2] = tau[:, 4:]
        c, k = tau[:, 2], tau[:, 3]
        stretch[:, 0, 0], stretch[:, 1, 1], stretch[:, 0, 1], stretch[:, 1, 0] = c, -c, k, k
        factors = ref.matrix_exp(torch.cat((shift, ref.planar_algebra_matrix(theta, tau[:, 1]), stretch)))
        return factors[: len(tau)] @ factors[len(tau): 2 * len(tau)] @ factors[2 * len(tau):]
    return ref.matrix_exp(ref.planar_algebra_matrix(theta, tau[:, 1], tau[:, 2:]))


def warp(images: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The same bilinear warp as ``act``, written out with a general matrix inverse."""
    theta = torch.linalg.inv(g)[:, :2, :].to(images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def run(repeats: int) -> list[dict]:
    """One row per group: median microseconds of ``exp``, milliseconds of the rest."""
    ref.import_geomstats("pytorch")
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(BATCH, 1, SIDE, SIDE, generator=gen)
    rows = []
    for tag in TAGS:
        group = build("group", {"type": tag})
        tau = group.sample(BATCH, gen)
        # sanity: both paths give the same images
        diff = (group.act(images, group.exp(tau)) - warp(images, geomstats_exp(tag, tau))).abs().max().item()
        assert diff < 1e-4, f"{tag}: paths disagree by {diff}"
        moving = tau.clone().requires_grad_(True)

        def train_step(exp_fn, warp_fn):
            moving.grad = None
            warp_fn(images, exp_fn(moving)).sum().backward()

        timed = median_seconds(
            {
                "exp_ours": lambda: group.exp(tau),
                "exp_geomstats": lambda: geomstats_exp(tag, tau),
                "total_ours": lambda: group.act(images, group.exp(tau)),
                "total_geomstats": lambda: warp(images, geomstats_exp(tag, tau)),
                "backward_ours": lambda: train_step(group.exp, group.act),
                "backward_geomstats": lambda: train_step(lambda t: geomstats_exp(tag, t), warp),
            },
            repeats,
        )
        rows.append({"tag": tag, "exp_ours_us": timed["exp_ours"] * 1e6, "exp_geomstats_us": timed["exp_geomstats"] * 1e6,
                     **{f"{key}_ms": timed[key] * 1e3 for key in ("total_ours", "total_geomstats", "backward_ours",
                                                                   "backward_geomstats")}})
    return rows


def render(result: dict) -> str:
    lines = [
        f"`{result['command']}` -- {result['machine']}.",
        "",
        f"`exp` + `act` on a batch of {result['batch']} images of {result['side']}x{result['side']} (1 channel) on "
        f"the CPU, median of {result['repeats']} repeats (the variants take turns). Ours: the plugin's closed-form "
        "`exp` (float32) and `act` (closed-form inverse and sampling grid, then `grid_sample`). "
        "geomstats path: its exponential (float64, its default), `torch.linalg.inv`, then the "
        "standard `affine_grid` + `grid_sample` warp (the same bilinear sampling, the same "
        "images out). The backward columns add the gradient with respect to `tau` of the "
        "warped batch's sum, as in training.",
        "",
        "| group | exp, ours (us) | exp, geomstats (us) | exp + act, ours (ms) | exp + act, geomstats path (ms) "
        "| exp + act + backward, ours (ms) | the same, geomstats path (ms) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| `{r['tag']}` | {r['exp_ours_us']:.0f} | {r['exp_geomstats_us']:.0f} | "
            f"{r['total_ours_ms']:.2f} | {r['total_geomstats_ms']:.2f} | "
            f"{r['backward_ours_ms']:.2f} | {r['backward_geomstats_ms']:.2f} |"
        )
    lines += ["", f"(The whole benchmark took {result['seconds']:.0f} s.)"]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = benchmark_parser(__file__, __doc__, "groups", threads=0)
    parser.add_argument("--repeats", type=int, default=30, help="timed repeats per figure (median reported)")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows = run(args.repeats)
    return publish({"batch": BATCH, "side": SIDE, "repeats": args.repeats, "rows": rows,
                    "seconds": time.perf_counter() - start}, args, argv)


if __name__ == "__main__":
    main()
