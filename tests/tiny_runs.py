"""Tiny trained runs shared by the tests of the run's outputs (STAR export, class averages,
report.html, the browser test): an MRC particle stack and a folder of images, each trained
for one epoch in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits

#: the side of the tiny particles (the model reads them Fourier-cropped to MODEL_SIDE).
STACK_SIDE, MODEL_SIDE = 16, 12
#: Angstrom per pixel in the tiny stack's header.
PIXEL_SIZE = 3.0
#: a file name and a class name that are markup: report.html must show them as text.
MARKUP_FILE = "<img src=x onerror=alert(1)>.png"
MARKUP_CLASS = "<img src=y onerror=alert(2)>"


def digit_particles(n: int = 120, side: int = STACK_SIDE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` of scikit-learn's digits 0, 1 and 7, centred on a ``side`` box, values in [0, 1]."""
    digits = load_digits()
    keep = np.flatnonzero(np.isin(digits.target, [0, 1, 7]))[:n]
    images = np.zeros((len(keep), side, side), dtype=np.float32)
    start = (side - 8) // 2
    images[:, start:start + 8, start:start + 8] = digits.images[keep] / 16.0
    return images, digits.target[keep]


def tiny_config(data: dict, group: dict, out: Path, components: int = 3) -> dict:
    return {
        "data": data,
        "group": group,
        "encoder": {"type": "mlp"},
        "decoder": {"type": "mlp"},
        "prior": {"type": "gmm", "n_components": components},
        "model": {"z_cluster_dim": 3, "z_style_dim": 2},
        "loss": {"mode": "unsupervised", "n_augment": 1},
        "training": {"epochs": 1, "batch_size": 32, "device": "cpu", "seed": 0, "out_dir": str(out)},
    }


def train(config: dict) -> Path:
    from mcvae_framework.train.trainer import Trainer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return Trainer(config, console=False, overwrite=True).run()
    finally:
        torch.set_num_threads(threads)


def mrc_run(root: Path) -> Path:
    """A run on an MRC stack (pixel size in its header, Fourier-cropped 16 -> 12 px), SE(2)."""
    import mrcfile

    images, labels = digit_particles()
    stack = root / "particles.mrcs"
    with mrcfile.new(stack, overwrite=True) as handle:
        handle.set_data(images)
        handle.set_image_stack()
        handle.voxel_size = PIXEL_SIZE
    np.save(root / "classes.npy", labels)
    data = {"type": "mrc", "path": str(stack), "labels": str(root / "classes.npy"), "downsample": MODEL_SIDE,
            "normalize": "minmax", "test_fraction": 0.25}
    return train(tiny_config(data, {"type": "se2", "angle_deg": [-180, 180], "shift": 0.1}, root / "run"))


def folder_run(root: Path) -> Path:
    """A run on a folder of PNGs in two class folders, one class and one file named like markup."""
    from PIL import Image

    images, labels = digit_particles(n=60)
    folder = root / "images"
    for i, (image, label) in enumerate(zip(images, labels)):
        cls = folder / (MARKUP_CLASS if label == 0 else f"digit{label}")
        cls.mkdir(parents=True, exist_ok=True)
        name = MARKUP_FILE if i == 0 else f"{i:03d}.png"
        Image.fromarray((image * 255).astype(np.uint8)).save(cls / name)
    data = {"type": "image_folder", "path": str(folder), "test_fraction": 0.25}
    return train(tiny_config(data, {"type": "so2", "angle_deg": [-90, 90]}, root / "run"))
