"""A new user's own folder: a few clearly different shapes, rotated and shifted, clustered
with the quickstart's settings (only the data, the group and the component count changed).

    python benchmarks/shapes_folder.py [--shapes 3] [--per-shape 100] [--seeds 0,1,2] [--out FILE] [--no-doc]

It draws filled shapes (ellipse, triangle, cross, ...) on 40x40 canvases with PIL, each at
a random angle over the full circle, shifted by up to 6 pixels and slightly resized, into
one sub-folder per shape (``image_folder`` reads the sub-folders as labels, which only the
scoring uses); then trains ``configs/quickstart.yaml`` on it with ``image_folder``, ``se2``
and as many components as shapes, and scores the clusters of the test split. The figures
go to ``benchmarks/results/shapes.json`` and the ``shapes`` block of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _report import benchmark_parser, publish, seed_list  # noqa: E402

from mcvae_framework.config.experiment import read_config_file  # noqa: E402
from mcvae_framework.report.evaluation import evaluate_run  # noqa: E402
from mcvae_framework.train.trainer import Trainer  # noqa: E402

SIDE = 40


def outline(shape: str) -> list[tuple[float, float]]:
    """Polygon of an upright shape around the origin, radius about 1."""
    if shape == "ellipse":
        return [(0.55 * math.cos(t), 1.0 * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 40, endpoint=False)]
    if shape == "triangle":
        return [(0.0, -1.0), (0.9, 0.75), (-0.9, 0.75)]
    if shape == "cross":
        a, b = 0.3, 1.0
        return [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a)]
    if shape == "arrow":
        return [(0.0, -1.0), (0.8, -0.1), (0.3, -0.1), (0.3, 1.0), (-0.3, 1.0), (-0.3, -0.1), (-0.8, -0.1)]
    raise ValueError(shape)


SHAPES = ("ellipse", "triangle", "cross", "arrow")


def draw(shape: str, rng: np.random.Generator) -> Image.Image:
    angle = rng.uniform(-math.pi, math.pi)
    radius = 9.0 * rng.uniform(0.9, 1.1)
    centre = SIDE / 2 + rng.uniform(-6, 6, size=2)
    cos, sin = math.cos(angle), math.sin(angle)
    points = [(centre[0] + radius * (cos * x - sin * y), centre[1] + radius * (sin * x + cos * y))
              for x, y in outline(shape)]
    image = Image.new("L", (SIDE, SIDE), 0)
    ImageDraw.Draw(image).polygon(points, fill=int(rng.uniform(200, 255)))
    return image


def make_folder(folder: Path, shapes, per_shape: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for shape in shapes:
        (folder / shape).mkdir(parents=True, exist_ok=True)
        for i in range(per_shape):
            draw(shape, rng).save(folder / shape / f"{i:04d}.png")


def config_for(folder: Path, n_shapes: int, seed: int, out_dir: Path) -> dict:
    config = read_config_file(ROOT / "configs" / "quickstart.yaml")
    config["data"] = {"type": "image_folder", "path": str(folder)}
    config["group"] = {"type": "se2", "angle_deg": [-180, 180], "shift": 0.15}
    config["prior"] = {**config["prior"], "n_components": n_shapes}
    config["training"].update(seed=seed, out_dir=str(out_dir), progress=False, device="cpu")
    return config


def main(argv=None) -> dict:
    parser = benchmark_parser(__file__, __doc__, "shapes", seeds="0,1,2")
    parser.add_argument("--shapes", type=int, default=3, help=f"how many shapes (2..{len(SHAPES)})")
    parser.add_argument("--per-shape", type=int, default=100, help="images of each shape")
    args = parser.parse_args(argv)
    shapes = SHAPES[:args.shapes]
    rows = []
    with tempfile.TemporaryDirectory(prefix="mcvae_shapes_") as tmp:
        folder = Path(tmp) / "shapes"
        make_folder(folder, shapes, args.per_shape, seed=0)  # the folder is drawn with seed 0 whatever --seeds
        for seed in seed_list(args):
            run = Path(tmp) / f"run_{seed}"
            start = time.perf_counter()
            Trainer(config_for(folder, len(shapes), seed, run), console=False).run()
            report = evaluate_run(run)
            rows.append({"seed": seed, "accuracy": report["accuracy"], "nmi": report["nmi"],
                         "sizes": report["clustering"]["cluster_sizes"], "seconds": time.perf_counter() - start})
            print(f"seed {seed}: accuracy {rows[-1]['accuracy']:.3f}, cluster sizes {rows[-1]['sizes']}, "
                  f"{rows[-1]['seconds']:.0f} s", flush=True)
    return publish({"shapes": list(shapes), "per_shape": args.per_shape, "rows": rows}, args, argv)


def render(result: dict) -> str:
    shapes = result["shapes"]
    lines = [f"`{result['command']}` -- {result['machine']}.", "",
             f"{len(shapes)} shapes ({', '.join(shapes)}), {result['per_shape']} images each, 40x40, rotated over the "
             "full circle and shifted by up to 6 px; `configs/quickstart.yaml` with `image_folder`, `se2` and "
             f"{len(shapes)} components; accuracy on the test split (20%).", "",
             "| seed | accuracy | NMI | cluster sizes | seconds |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['seed']} | {r['accuracy']:.3f} | {r['nmi']:.3f} | {r['sizes']} | {r['seconds']:.0f} |"
              for r in result["rows"]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
