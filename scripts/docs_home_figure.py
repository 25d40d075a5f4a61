"""Make the picture on the documentation's home page from a real run folder.

    python scripts/docs_home_figure.py runs/quickstart

It draws the run's figures with ``mcvae plot``'s code (``mcvae_framework.report.plotting.plot_run``)
unless they are already in ``RUN/plots``, then stacks the reconstructions (input /
reconstruction / canonical / true canonical) above the cluster prototypes into
``docs/images/quickstart.png``. While that file exists, the docs build puts it on the home
page (see ``scripts/docs_hooks.py``), with a caption naming the run's config and scores.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images" / "quickstart.png"


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run folder written by `mcvae train`")
    parser.add_argument("--out", type=Path, default=OUT, help=f"PNG to write (default {OUT.relative_to(ROOT)})")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = args.run_dir / "plots"
    panels = [plots / "reconstructions.png", plots / "prototypes.png"]
    if not all(p.is_file() for p in panels):
        from mcvae_framework.report.plotting import plot_run

        plot_run(args.run_dir)
    images = [plt.imread(p) for p in panels]
    width = max(img.shape[1] for img in images)
    heights = [img.shape[0] * width / img.shape[1] for img in images]
    fig, axes = plt.subplots(len(images), 1, figsize=(width / 100, sum(heights) / 100),
                             gridspec_kw={"height_ratios": heights})
    for ax, img in zip(axes, images):
        ax.imshow(img)
        ax.axis("off")
    fig.subplots_adjust(left=0, right=1, top=1, bottom=0, hspace=0.02)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    plt.close(fig)

    # The caption says which run it is, so the page never shows an unexplained picture.
    config = json.loads((args.run_dir / "config.json").read_text(encoding="utf-8"))
    caption = {"data": config["data"]["type"], "group": (config.get("group") or {}).get("type"),
               "prior": config["prior"]["type"]}
    report = args.run_dir / "report.json"
    if report.is_file():
        scores = json.loads(report.read_text(encoding="utf-8"))
        caption.update({k: scores[k] for k in ("accuracy", "nmi", "ari") if k in scores})
    args.out.with_suffix(".json").write_text(json.dumps(caption, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
