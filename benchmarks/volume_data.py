"""The volume data of the 3-D benchmarks (``bench_volumes.py``) and of the ready configs
``configs/so3_blobs.yaml`` and ``configs/so3_subtomograms.yaml``, made from a seed.

Both hold canonical (un-rotated) volumes; the configs' ``transform: {group: so3}`` turns
each copy by a seeded, uniformly random 3-D rotation (the group's own ``act``) and keeps
the true pose beside it, so that pose recovery can be scored.

* **blobs** (``arrays``): three asymmetric shapes, each a sum of five anisotropic Gaussian
  blobs at seeded places inside the sphere that every rotation keeps in the cube, 300
  copies each, every copy with its blobs shifted and weighted a little differently;
  24^3 voxels, ``uint8``, ``~/.cache/mcvae_framework/volumes/blobs24.npz`` (``images``, ``labels``).
* **subtomograms** (``mrc``): the three volumes of ASPIRE's ``AsymmetricVolume(L=24, C=3,
  K=64, seed=0)`` (sums of random Gaussians, the field's simulated test volumes), 300 noisy
  copies each: white Gaussian noise of variance ``var(signal) / snr`` (the signal's variance
  inside the mask), then a soft spherical mask (radius 10 voxels, a 2-voxel cosine edge: the
  mask is the same at every rotation, so rotating a copy adds no edge), mapped linearly onto
  ``[0, 1]``; written as an MRC volume stack (``float32``, 4-D) with a labels file. The
  ASPIRE volumes are cached in ``benchmarks/data/aspire_asymmetric_L24_C3.npz`` (importing
  ASPIRE takes half a minute); the noise is drawn by numpy from the seed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

#: where the volumes go: a cache outside the repository, so that the ready configs read them
#: from wherever they are copied (``~`` in a data path is expanded).
DATA = Path("~/.cache/mcvae_framework/volumes").expanduser()
ASPIRE_CACHE = Path(__file__).resolve().parent / "data" / "aspire_asymmetric_L24_C3.npz"
SIDE, PER_CLASS, CLASSES = 24, 300, 3
#: the SNR of the ready config configs/so3_subtomograms.yaml.
READY_SNR = 0.1


def _coordinates(side: int = SIDE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised ``(x, y, z)`` of every voxel centre, each ``(D, H, W)`` indexed ``[z, y, x]``."""
    c = (2 * np.arange(side) + 1) / side - 1
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    return x, y, z


def asymmetric_blobs(seed: int = 0, per_class: int = PER_CLASS, side: int = SIDE) -> tuple[np.ndarray, np.ndarray]:
    """``(3 * per_class, side, side, side)`` uint8 volumes and their ``(N,)`` labels."""
    rng = np.random.default_rng(seed)
    x, y, z = _coordinates(side)
    images, labels = [], []
    for label in range(CLASSES):
        centres = rng.normal(size=(5, 3))
        centres *= (rng.uniform(0.15, 0.45, size=(5, 1)) / np.linalg.norm(centres, axis=1, keepdims=True))
        widths = rng.uniform(0.08, 0.18, size=(5, 3))
        weights = rng.uniform(0.5, 1.0, size=5)
        for _ in range(per_class):
            moved = centres + rng.normal(scale=0.015, size=centres.shape)
            scale = weights * rng.uniform(0.9, 1.1, size=5)
            volume = sum(w * np.exp(-((x - c[0]) ** 2 / (2 * s[0] ** 2) + (y - c[1]) ** 2 / (2 * s[1] ** 2)
                                      + (z - c[2]) ** 2 / (2 * s[2] ** 2)))
                         for c, s, w in zip(moved, widths, scale))
            images.append(np.round(255 * np.clip(volume / volume.max(), 0, 1)).astype(np.uint8))
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def aspire_volumes(refresh: bool = False) -> np.ndarray:
    """``(3, 24, 24, 24)`` float32: ASPIRE's ``AsymmetricVolume(L=24, C=3, K=64, seed=0)``,
    from the cache unless ``refresh`` (which imports ASPIRE and writes the cache)."""
    if ASPIRE_CACHE.is_file() and not refresh:
        return np.load(ASPIRE_CACHE)["volumes"]
    from aspire.volume import AsymmetricVolume

    volumes = AsymmetricVolume(L=SIDE, C=CLASSES, K=64, seed=0, dtype=np.float32).generate().asnumpy()
    ASPIRE_CACHE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(ASPIRE_CACHE, volumes=volumes.astype(np.float32))
    return volumes


def soft_sphere(side: int = SIDE, radius: float = 10.0, edge: float = 2.0) -> np.ndarray:
    """1 inside ``radius`` voxels from the centre, 0 beyond ``radius + edge``, a cosine between."""
    c = (side - 1) / 2
    z, y, x = np.meshgrid(*[np.arange(side) - c] * 3, indexing="ij")
    r = np.sqrt(x * x + y * y + z * z)
    return np.where(r <= radius, 1.0, np.where(r >= radius + edge, 0.0,
                                                  0.5 * (1 + np.cos(math.pi * (r - radius) / edge))))


def subtomograms(snr: float, seed: int = 0, per_class: int = PER_CLASS) -> tuple[np.ndarray, np.ndarray]:
    """``(3 * per_class, 24, 24, 24)`` float32 noisy copies in ``[0, 1]`` and their labels."""
    rng = np.random.default_rng(seed)
    volumes = aspire_volumes()
    mask = soft_sphere()
    inside = mask > 0.5
    signal = volumes / volumes.max()
    sigma = math.sqrt(float(np.mean([v[inside].var() for v in signal])) / snr)
    low, high = -3 * sigma, 1 + 3 * sigma
    copies = np.repeat(signal, per_class, axis=0) + rng.normal(scale=sigma, size=(CLASSES * per_class,) + signal.shape[1:])
    noisy = np.clip((copies * mask - low) / (high - low), 0, 1) * mask
    return noisy.astype(np.float32), np.repeat(np.arange(CLASSES), per_class)


def subtomogram_paths(snr: float, folder: Path = DATA) -> tuple[Path, Path]:
    """The ``.mrcs`` stack and the labels file of one SNR."""
    stem = f"subtomograms24_snr{snr:g}"
    return folder / f"{stem}.mrcs", folder / f"{stem}_labels.npy"


def write_blobs(folder: Path = DATA, seed: int = 0) -> Path:
    path = folder / "blobs24.npz"
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = asymmetric_blobs(seed)
    np.savez_compressed(path, images=images, labels=labels)
    return path


def write_subtomograms(snr: float, folder: Path = DATA, seed: int = 0) -> Path:
    import mrcfile

    stack, labels_path = subtomogram_paths(snr, folder)
    folder.mkdir(parents=True, exist_ok=True)
    volumes, labels = subtomograms(snr, seed)
    with mrcfile.new(stack, overwrite=True) as handle:
        handle.set_data(volumes)  # a 4-D array: mrcfile marks it as a volume stack
    np.save(labels_path, labels)
    return stack


def ensure_ready_data(folder: Path = DATA) -> None:
    """Write the files the ready configs read, where they are missing."""
    if not (folder / "blobs24.npz").is_file():
        write_blobs(folder)
    if not subtomogram_paths(READY_SNR, folder)[0].is_file():
        write_subtomograms(READY_SNR, folder)


if __name__ == "__main__":
    ensure_ready_data()
    print(f"wrote the volume data of the ready configs to {DATA}")
