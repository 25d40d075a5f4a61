"""Make every figure of the documentation from runs of today's code, and the manifest
``docs/images/figures.json`` that their captions are written from.

    python scripts/docs_figures.py                 # trains what is missing (about 15 minutes on 2 CPU cores)
    python scripts/docs_figures.py --quickstart-run runs/quickstart --cryo-run runs/cryo_demo

Two runs feed them:

* the quickstart: ``mcvae train configs/quickstart.yaml``, then ``mcvae evaluate`` (which
  also writes the class averages and ``report.html``);
* the cryo-EM demo: a particle stack simulated with ASPIRE (three random volumes, one view
  each, turned in-plane at random, white noise at SNR 1; no CTF), written as an ``.mrcs``
  with its pixel size in the header, trained with :func:`cryo_demo_config`, evaluated,
  and its kept clusters written as a STAR file.

The figures (``docs/images/``): ``home.png`` (the home page: test digits, their
reconstructions, canonical reconstructions, and the cluster prototypes),
``class_averages.png`` (the quickstart's class averages and their Fourier ring
correlation against single members'), ``gallery.png`` and ``cryo_gallery.png``
(``report.html`` of each run in headless Chromium, one cluster marked rejected). A run
reused with ``--...-run`` must have been trained from the current config (checked). Each
figure's caption (with the run's scores and config) goes into the manifest; the docs
build writes it under the figure (``scripts/docs_hooks.py``, blocks ``figure-NAME``), and
``tests/test_docs.py`` fails when a page's caption or a manifest's config is stale.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
MANIFEST = IMAGES / "figures.json"
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
#: config fields that say where and how a run ran, not what it learned: left out of the comparison.
MACHINE_FIELDS = {"training": ("out_dir", "num_threads", "device", "num_workers", "tensorboard")}

#: the simulated particle stack of the cryo-EM demo: CRYO_CLASSES views of as many volumes,
#: CRYO_PARTICLES particles each, and CRYO_JUNK picks that hold no particle (noise only).
CRYO_PARTICLES, CRYO_CLASSES, CRYO_JUNK, CRYO_SIDE, CRYO_PIXEL_SIZE, CRYO_SNR = 400, 3, 300, 32, 2.0, 3.0


def cryo_demo_config(stack: str = "particles.mrcs", out_dir: str = "runs/cryo_demo") -> dict:
    """The cryo-EM demo's experiment config (the quickstart's settings for a particle stack, without the
    quickstart's ``loss.self_label_target``: the demo's figures were made before it, and it would never
    act there: the demo's model keeps 100% of its graph's unanimous images from the first check on)."""
    return {
        "data": {"type": "mrc", "path": stack, "labels": "classes.npy", "mask_radius": 0.9},
        "group": {"type": "so2", "angle_deg": [-180, 180]},
        "encoder": {"type": "conv"},
        "decoder": {"type": "mlp"},
        "prior": {"type": "gmm", "n_components": CRYO_CLASSES + 1, "learn_weights": False},
        "model": {"z_cluster_dim": 10, "z_style_dim": 8, "canonicalize": False},
        "graph": {"enabled": True, "neighbours": 7, "confident_fraction": 1.0},
        "loss": {"mode": "unsupervised", "n_augment": 4, "pretrain_epochs": 5, "self_label_weight": 20,
                 "self_label_copies": 1, "pose_guide_weight": 100},
        "training": {"epochs": 15, "batch_size": 64, "transductive": True, "min_steps_per_epoch": 60,
                     "eval_every": 5, "lr": 1.0e-3, "scheduler": "cosine", "seed": 0, "out_dir": out_dir},
    }


#: how each run of the manifest names its config (``run.config_file``).
CRYO_CONFIG = "scripts/docs_figures.py (cryo_demo_config)"


def todays_config(config_file: str) -> dict:
    """The comparable resolved config a figure's run must have been trained from today."""
    if config_file == CRYO_CONFIG:
        return resolved(cryo_demo_config())
    return resolved(ROOT / config_file)


def comparable(config: dict) -> dict:
    """A resolved config less the fields that only say where it ran (and the data paths)."""
    config = json.loads(json.dumps(config))
    for section, fields in MACHINE_FIELDS.items():
        for name in fields:
            config.get(section, {}).pop(name, None)
    for name in ("path", "labels"):
        config.get("data", {}).pop(name, None)
    return config


def resolved(config) -> dict:
    from mcvae_framework import load_config, validate_config
    from mcvae_framework.config.experiment import config_to_dict

    loaded = load_config(config) if isinstance(config, (str, Path)) else validate_config(config)
    return comparable(config_to_dict(loaded))


def mcvae(*args) -> None:
    subprocess.run([sys.executable, "-m", "mcvae_framework.cli", *map(str, args)], check=True)


def same_config(run: dict, today: dict) -> bool:
    """Whether a run's comparable config is ``today``'s: equal, but for fields of the core's
    sections (``model``, ``loss``, ``graph``, ``training``) added since the run, which it lacks,
    and which hold their default today (the behaviour the run already had)."""
    from mcvae_framework.config.sections import GraphConfig, LossConfig, ModelConfig, TrainingConfig

    core = {"model": ModelConfig, "loss": LossConfig, "graph": GraphConfig, "training": TrainingConfig}
    today = json.loads(json.dumps(today))
    for section, fields in today.items():
        if section not in core or not isinstance(run.get(section), dict):
            continue
        for name in [n for n in fields if n not in run[section] and n in core[section].model_fields]:
            if fields[name] == core[section].model_fields[name].default:
                del fields[name]
    return run == today


def ensure_run(run_dir: Path, config_file: Path, expected: dict) -> Path:
    """Train and evaluate into ``run_dir`` unless it holds an evaluated run of ``expected``."""
    config_json = run_dir / "config.json"
    if config_json.is_file() and not same_config(comparable(json.loads(config_json.read_text())), expected):
        raise SystemExit(f"{run_dir} was trained from another config than {config_file}; retrain it "
                         "(leave --...-run out) or give the right run")
    if not (run_dir / "checkpoints" / "last.pt").is_file():
        mcvae("train", config_file, "--out-dir", run_dir, "--overwrite")
    if not (run_dir / "report.html").is_file() or not (run_dir / "report.json").is_file():
        mcvae("evaluate", run_dir)
    return run_dir


def simulate_particles(folder: Path, seed: int = 0) -> Path:
    """The cryo-EM demo's stack: ASPIRE's random volumes, one view each (Euler angles
    ``(0, 0, psi)``: a pure in-plane turn), white noise at :data:`CRYO_SNR`, and junk picks
    (amplitude 0: the noise alone), shuffled; ``classes.npy`` holds the truth (junk last)."""
    import mrcfile
    from aspire.noise import WhiteNoiseAdder
    from aspire.source import Simulation
    from aspire.volume import AsymmetricVolume

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    truth = np.concatenate([np.repeat(np.arange(CRYO_CLASSES), CRYO_PARTICLES), np.full(CRYO_JUNK, CRYO_CLASSES)])
    rng.shuffle(truth)
    n = len(truth)
    angles = np.zeros((n, 3), dtype=np.float32)
    angles[:, 2] = rng.uniform(-np.pi, np.pi, n)
    volumes = AsymmetricVolume(L=CRYO_SIDE, C=CRYO_CLASSES, K=64, seed=seed).generate()
    states = np.where(truth < CRYO_CLASSES, truth, 0) + 1  # a junk pick's volume does not matter: amplitude 0
    simulation = Simulation(L=CRYO_SIDE, n=n, vols=volumes, states=states, angles=angles,
                            offsets=np.zeros((n, 2), dtype=np.float32),
                            amplitudes=(truth < CRYO_CLASSES).astype(np.float32),
                            noise_adder=WhiteNoiseAdder.from_snr(CRYO_SNR), seed=seed)
    stack = folder / "particles.mrcs"
    with mrcfile.new(stack, overwrite=True) as handle:
        handle.set_data(simulation.images[:].asnumpy().astype(np.float32))
        handle.set_image_stack()
        handle.voxel_size = CRYO_PIXEL_SIZE
    np.save(folder / "classes.npy", truth)
    return stack


def ensure_cryo_run(run_dir: Path) -> tuple[Path, Path]:
    """The demo's stack, config and evaluated run, in ``run_dir``; returns the run and its
    STAR file of the kept clusters."""
    import yaml

    config_file = run_dir / "cryo.yaml"
    if not (run_dir / "particles.mrcs").is_file():
        simulate_particles(run_dir)
    config_file.write_text(yaml.safe_dump(cryo_demo_config(out_dir=str(run_dir)), sort_keys=False), encoding="utf-8")
    ensure_run(run_dir, config_file, resolved(cryo_demo_config(str(run_dir / "particles.mrcs"))))
    star = run_dir / "selection.star"
    kept = ",".join(map(str, kept_clusters(run_dir)))
    mcvae("predict", run_dir, "--data", run_dir / "config.json", "--clusters", kept, "--out", star)
    return run_dir, star


def kept_clusters(run_dir: Path) -> list[int]:
    """The clusters the demo keeps: all but the one whose class average is the least
    resolved (the largest FRC period: the halves of a junk class agree on nothing)."""
    classes = [row for row in json.loads((run_dir / "class_averages.json").read_text())["classes"] if row["size"]]
    worst = max(classes, key=lambda row: row["frc_resolution_px"] or float("inf"))["cluster"]
    return [row["cluster"] for row in classes if row["cluster"] != worst]


# ------------------------------------------------------------------------ figures


def stacked(panels: list[Path], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = [plt.imread(p) for p in panels]
    width = max(img.shape[1] for img in images)
    heights = [img.shape[0] * width / img.shape[1] for img in images]
    fig, axes = plt.subplots(len(images), 1, figsize=(width / 100, sum(heights) / 100),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, img in zip(axes[:, 0], images):
        ax.imshow(img)
        ax.axis("off")
    fig.subplots_adjust(left=0, right=1, top=1, bottom=0, hspace=0.02)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def home_figure(run_dir: Path) -> Path:
    from mcvae_framework.report.plotting import plot_run

    plots = plot_run(run_dir, out_dir=Path(tempfile.mkdtemp()))
    return stacked([plots["reconstructions"], plots["prototypes"]], IMAGES / "home.png")


def frc_figure(run_dir: Path) -> tuple[Path, dict]:
    """The class averages above the median FRC curves (halves of each class, pairs of
    single members), and the figures quoted in the caption."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = json.loads((run_dir / "class_averages.json").read_text())
    frc, member = np.array(summary["frc"], dtype=float), np.array(summary["member_frc"], dtype=float)
    rings = np.arange(frc.shape[1])
    side = 2 * (frc.shape[1] - 1)
    fig, ax = plt.subplots(figsize=(6.5, 2.6))
    ax.plot(rings[1:] / side, np.nanmedian(frc, 0)[1:], label="two halves of each class, averaged")
    ax.plot(rings[1:] / side, np.nanmedian(member, 0)[1:], label="two single members of each class")
    ax.axhline(1 / 7, color="grey", linestyle="--", linewidth=1, label="0.143")
    ax.set_xlabel("spatial frequency (1/pixel)")
    ax.set_ylabel("FRC (median over classes)")
    ax.legend(fontsize=8)
    curves = Path(tempfile.mkdtemp()) / "frc.png"
    fig.tight_layout()
    fig.savefig(curves, dpi=100)
    plt.close(fig)
    rows = summary["classes"]
    figures = {"median_average_px": float(np.median([r["frc_resolution_px"] for r in rows])),
               "median_member_px": float(np.median([r["member_frc_resolution_px"] for r in rows])),
               "n_images": summary["n_images"], "split": summary["split"]}
    return stacked([run_dir / "class_averages.png", curves], IMAGES / "class_averages.png"), figures


def screenshot(page: Path, out: Path, reject: int | None = None, height: int = 900) -> Path:
    """``page`` in headless Chromium (the flags of tests/test_report_browser.py), one cluster
    marked rejected, the top of the page captured."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from test_report_browser import browser
    finally:
        sys.path.pop(0)
    with tempfile.TemporaryDirectory() as profile:
        driver, reason = browser(Path(profile), width=1300, height=height)
        if driver is None:
            raise SystemExit(f"cannot take the gallery's screenshot: {reason}")
        try:
            driver.get(page.as_uri())
            if reject is not None:
                driver.find_element("css selector", f'.card[data-cluster="{reject}"] button.reject').click()
            driver.save_screenshot(str(out))
        finally:
            driver.quit()
    return out


def run_facts(run_dir: Path, config_file: str, config: dict) -> dict:
    report = json.loads((run_dir / "report.json").read_text())
    return {"config_file": config_file, "config": config,
            **{key: round(float(report[key]), 3) for key in ("accuracy", "nmi", "ari") if key in report}}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quickstart-run", type=Path, default=ROOT / "runs" / "quickstart")
    parser.add_argument("--cryo-run", type=Path, default=ROOT / "runs" / "cryo_demo")
    args = parser.parse_args(argv)
    IMAGES.mkdir(parents=True, exist_ok=True)

    quick = ensure_run(args.quickstart_run, QUICKSTART, resolved(QUICKSTART))
    quick_facts = run_facts(quick, "configs/quickstart.yaml", resolved(QUICKSTART))
    cryo, star = ensure_cryo_run(args.cryo_run)
    cryo_facts = run_facts(cryo, CRYO_CONFIG,
                           resolved(cryo_demo_config(str(cryo / "particles.mrcs"))))
    run_from = "From a run of `mcvae train configs/quickstart.yaml` and `mcvae evaluate`"
    scores = f"test accuracy {quick_facts['accuracy']:.3f}, NMI {quick_facts['nmi']:.3f}, ARI {quick_facts['ari']:.3f}"

    home_figure(quick)
    _, frc = frc_figure(quick)
    classes = json.loads((quick / "class_averages.json").read_text())["classes"]
    doubtful = min((r for r in classes if r["size"]), key=lambda r: r["mean_probability"])["cluster"]
    screenshot(quick / "report.html", IMAGES / "gallery.png", reject=doubtful)
    cryo_rejected = sorted(set(r["cluster"] for r in json.loads((cryo / "class_averages.json").read_text())["classes"]
                               if r["size"]) - set(kept_clusters(cryo)))
    screenshot(cryo / "report.html", IMAGES / "cryo_gallery.png", reject=cryo_rejected[0] if cryo_rejected else None,
               height=760)
    import starfile

    kept_rows = len(starfile.read(star)["particles"])
    manifest = {
        "home": {"file": "images/home.png", "alt": "Test digits, reconstructions, canonical reconstructions and "
                 "cluster prototypes", "run": quick_facts,
                 "caption": f"{run_from} ({scores}). Top: test images, their reconstructions, the canonical "
                            "reconstructions and the true canonical images. Bottom: the decoded cluster prototypes "
                            "under a sweep of poses."},
        "class-averages": {"file": "images/class_averages.png", "alt": "Class averages and their Fourier ring "
                           "correlation", "run": quick_facts,
                           "caption": f"{run_from} ({scores}): the class averages of its {frc['n_images']:,} "
                                      f"{frc['split']} images, each member moved back by its inferred pose. The "
                                      "averages of two random halves of a class agree (FRC above 0.143) to a period of "
                                      f"{frc['median_average_px']:.1f} pixels (median over the classes), two single "
                                      f"members only to {frc['median_member_px']:.1f} pixels: an average is sharper "
                                      "than any one image."},
        "gallery": {"file": "images/gallery.png", "alt": "The cluster gallery report.html", "run": quick_facts,
                    "caption": f"`report.html` of the same run ({scores}) in headless Chromium, cluster {doubtful} "
                               "(the least confident) marked rejected."},
        "cryo-gallery": {"file": "images/cryo_gallery.png", "alt": "The cluster gallery of simulated particles",
                         "run": cryo_facts,
                         "caption": f"`report.html` of the cryo-EM demo: particles simulated with ASPIRE "
                                    f"({CRYO_PARTICLES:,} of each of {CRYO_CLASSES} views turned in-plane, and "
                                    f"{CRYO_JUNK} junk picks of noise alone; SNR {CRYO_SNR:g}, {CRYO_SIDE} px at "
                                    f"{CRYO_PIXEL_SIZE:g} Å), accuracy {cryo_facts['accuracy']:.3f} on its test "
                                    f"particles. Cluster {', '.join(map(str, cryo_rejected)) or '-'}, the least "
                                    f"resolved class average, is marked rejected; the {kept_rows:,} particles of the "
                                    "kept clusters went to `selection.star`."},
    }
    MANIFEST.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {', '.join(entry['file'] for entry in manifest.values())} and {MANIFEST.relative_to(ROOT)}")
    return manifest


if __name__ == "__main__":
    main()
