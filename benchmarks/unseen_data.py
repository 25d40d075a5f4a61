"""The data families of the unseen-data benchmark (``benchmarks/unseen.py``), made on this
machine from a seed, and split once, before any setting was chosen, into a development
half (settings may be tuned on it) and a held-out half (reported untouched).

Each family makes one data set per seed in a folder and says how a new user would read it:
the ``data`` section, the group, the number of classes, and which ready config a user would
start from (``configs/quickstart.yaml`` for images, ``configs/templates/particles.yaml`` for cryo-EM
particle stacks). Labels are written beside the images only so that clusters can be scored.

=================  ===========  ==========================================================
family             half         what
=================  ===========  ==========================================================
shapes_filled      development  filled shapes (3, 5, 8 of them by seed), 40x40, full circle
digits             development  scikit-learn's 1,797 digits, 16x16, turned in [-90, 90] deg
particles_64       development  ASPIRE: 5 volumes, one view each, 64 px, SNR 1 / 0.1 / 0.05
shapes_outline     held-out     shape outlines (2, 4, 6 by seed), 48x48, noise, wider shifts
fashion_subsets    held-out     4 Fashion-MNIST classes chosen by the seed, full circle
particles_128      held-out     ASPIRE: 3 volumes x 2 views, 128 px, SNR 1 / 0.1 / 0.05
particles_views    development  ASPIRE: 4 volumes x 2 views, 400 each, 64 px (added later, see below)
particles_96       held-out     ASPIRE: 3 volumes x 3 views, 350 each, 96 px (added later, see below)
outlines_dev       development  shape outlines (3, 5, 4 by seed), other draws (added later, see below)
skewed_dev         development  ASPIRE: 3 volumes x 2 views, unequal classes, 64 px (added later)
particles_skewed   held-out     ASPIRE: 4 volumes x 2 views, unequal classes, 80 px (added later)
=================  ===========  ==========================================================

The last two were added after the first report, when the held-out particles_128 rows had
shown a failure the development stacks did not (the graph at 0.843 at SNR 0.1 where
particles_64 gave 1.000): particles_views is a development stack with fewer particles per
class and several views per volume, on which the changes that followed were tried, and
particles_96 a new held-out family, fixed before any of those runs and reported untouched.
particles_128, seen before those changes, is reported beside it but is no longer untouched.

Every particle family above has classes of equal size; a real stack rarely has (some views of a
molecule are rare). skewed_dev and particles_skewed, whose classes hold from 35% down to 4% of
the particles, were added together and committed before any run on either: settings may be
tried on the first, the second is reported untouched.

outlines_dev was added (and committed before any run on it) when the held-out shape outlines'
seed 1 ended with the model below its graph (0.967 against 0.992) and no development family
showed it: outlines drawn like the held-out ones (2 px, noise 0.1, wide shifts) from other random
draws and shape counts, so that a change for outlines is chosen without reading the held-out rows.
"""

from __future__ import annotations

import gzip
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

DEVELOPMENT, HELD_OUT = "development", "held-out"
FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")


@dataclass
class DataSet:
    """One family's data for one seed: how a user would configure it, and its labels."""

    data: dict
    group: dict
    n_classes: int
    labels: np.ndarray
    images: np.ndarray | None = None  # (N, H, W) float, when a peer needs the pixels
    notes: dict = field(default_factory=dict)


@dataclass
class Family:
    name: str
    half: str
    description: str
    make: Callable[[Path, int, str], DataSet] | None = None  # (folder, seed, variant) -> DataSet
    variants: tuple[str, ...] = ("",)
    stack: "ParticleStack | None" = None  # a simulated particle family's stacks: make and variants follow from it

    def __post_init__(self):
        if self.stack is not None:
            self.make, self.variants = self.stack.make, tuple(SNRS)

    @property
    def particles(self) -> bool:
        return self.stack is not None

    @property
    def base_config(self) -> str:
        """The ready config (under ``configs/``) a user of this family's data starts from."""
        return "templates/particles.yaml" if self.particles else "quickstart.yaml"


# --- shapes -------------------------------------------------------------------------------------

def _star(points: int, inner: float) -> list[tuple[float, float]]:
    out = []
    for i in range(2 * points):
        r = 1.0 if i % 2 == 0 else inner
        t = math.pi * i / points - math.pi / 2
        out.append((r * math.cos(t), r * math.sin(t)))
    return out


#: upright polygons of radius about 1; none is another one turned or scaled
SHAPE_LIBRARY: dict[str, list[tuple[float, float]]] = {
    "ellipse": [(0.55 * math.cos(t), math.sin(t)) for t in np.linspace(0, 2 * math.pi, 40, endpoint=False)],
    "triangle": [(0.0, -1.0), (0.9, 0.75), (-0.9, 0.75)],
    "plus": [(-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3), (0.3, 1), (-0.3, 1),
             (-0.3, 0.3), (-1, 0.3), (-1, -0.3), (-0.3, -0.3)],
    "arrow": [(0.0, -1.0), (0.8, -0.1), (0.3, -0.1), (0.3, 1.0), (-0.3, 1.0), (-0.3, -0.1), (-0.8, -0.1)],
    "star": _star(5, 0.45),
    "ell": [(-0.6, -1), (-0.1, -1), (-0.1, 0.5), (0.7, 0.5), (0.7, 1), (-0.6, 1)],
    "tee": [(-0.9, -1), (0.9, -1), (0.9, -0.5), (0.25, -0.5), (0.25, 1), (-0.25, 1), (-0.25, -0.5), (-0.9, -0.5)],
    "crescent": ([(math.cos(t), math.sin(t)) for t in np.linspace(-0.6 * math.pi, 0.6 * math.pi, 20)]
                 + [(0.35 + 0.55 * math.cos(t), 0.8 * math.sin(t)) for t in np.linspace(0.55 * math.pi, -0.55 * math.pi, 20)]),
    "hexagon": [(math.cos(t), math.sin(t)) for t in np.linspace(0, 2 * math.pi, 6, endpoint=False)],
    "kite": [(0.0, -1.0), (0.55, -0.2), (0.0, 1.0), (-0.55, -0.2)],
}


def draw_shape(points, side: int, rng: np.random.Generator, *, radius: float, size_jitter: float, shift: float,
               outline: int = 0) -> np.ndarray:
    angle = rng.uniform(-math.pi, math.pi)
    r = radius * rng.uniform(1 - size_jitter, 1 + size_jitter)
    centre = side / 2 + rng.uniform(-shift, shift, size=2)
    cos, sin = math.cos(angle), math.sin(angle)
    poly = [(centre[0] + r * (cos * x - sin * y), centre[1] + r * (sin * x + cos * y)) for x, y in points]
    image = Image.new("L", (side, side), 0)
    value = int(rng.uniform(200, 255))
    if outline:
        ImageDraw.Draw(image).polygon(poly, outline=value, width=outline)
    else:
        ImageDraw.Draw(image).polygon(poly, fill=value)
    return np.asarray(image, dtype=np.float32) / 255.0


def _shape_folder(folder: Path, names, per_shape: int, side: int, rng, *, noise: float = 0.0, **draw) -> np.ndarray:
    labels = []
    for label, name in enumerate(names):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_shape):
            image = draw_shape(SHAPE_LIBRARY[name], side, rng, **draw)
            if noise:
                image = np.clip(image + rng.normal(0, noise, image.shape), 0, 1)
            Image.fromarray((image * 255).round().astype(np.uint8)).save(folder / name / f"{i:04d}.png")
            labels.append(label)
    return np.asarray(labels)


def make_shapes_filled(folder: Path, seed: int, variant: str = "") -> DataSet:
    """The issue's folder for seed 0 (ellipse, triangle, plus); 5 and 8 shapes for seeds 1, 2."""
    rng = np.random.default_rng(1000 + seed)
    names = [("ellipse", "triangle", "plus"), ("ellipse", "triangle", "plus", "arrow", "star"),
             ("ellipse", "triangle", "plus", "arrow", "star", "ell", "tee", "crescent")][seed % 3]
    labels = _shape_folder(folder, names, 200, 40, rng, radius=9.0, size_jitter=0.1, shift=4.0)
    return DataSet({"type": "image_folder", "path": str(folder)}, {"type": "se2", "angle_deg": [-180, 180],
                   "shift": 0.15}, len(names), labels, notes={"shapes": list(names)})


def _outlines(folder: Path, rng: np.random.Generator, count: int) -> DataSet:
    """``count`` shapes drawn from the library by ``rng``, as 2-px outlines, 150 each, 48x48, sizes
    +-20%, shifts up to 6 px, Gaussian noise of 0.1."""
    names = [str(n) for n in rng.choice(sorted(SHAPE_LIBRARY), size=count, replace=False)]
    labels = _shape_folder(folder, names, 150, 48, rng, radius=12.0, size_jitter=0.2, shift=6.0, outline=2,
                           noise=0.1)
    return DataSet({"type": "image_folder", "path": str(folder)}, {"type": "se2", "angle_deg": [-180, 180],
                   "shift": 0.15}, count, labels, notes={"shapes": names})


def make_shapes_outline(folder: Path, seed: int, variant: str = "") -> DataSet:
    """Outlines (:func:`_outlines`) of 2 / 4 / 6 shapes by the seed."""
    return _outlines(folder, np.random.default_rng(2000 + seed), (2, 4, 6)[seed % 3])


def make_outlines_dev(folder: Path, seed: int, variant: str = "") -> DataSet:
    """The development twin of :func:`make_shapes_outline`: the same drawing from other draws, 3 / 5 / 4
    shapes by the seed."""
    return _outlines(folder, np.random.default_rng(2500 + seed), (3, 5, 4)[seed % 3])


# --- real images ---------------------------------------------------------------------------------

def make_digits(folder: Path, seed: int, variant: str = "") -> DataSet:
    """scikit-learn's 8x8 digits, upsampled to 16x16 (bilinear), turned in [-90, 90] degrees by the
    data's seeded transform on a 20x20 canvas."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    images = F.interpolate(images, size=(16, 16), mode="bilinear", align_corners=False)[:, 0].clamp(0, 1).numpy()
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "digits.npz", images=images, labels=digits.target)
    data = {"type": "arrays", "path": str(folder / "digits.npz"),
            "transform": {"group": "so2", "angle_deg": [-90, 90], "seed": seed, "canvas": 20}}
    return DataSet(data, {"type": "so2", "angle_deg": [-90, 90]}, 10, digits.target)


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def make_fashion_subsets(folder: Path, seed: int, variant: str = "") -> DataSet:
    """4 of Fashion-MNIST's 10 classes chosen by the seed, 1,000 training images each, turned over
    the full circle on a 28x28 canvas."""
    rng = np.random.default_rng(3000 + seed)
    images = _read_idx(FASHION_ROOT / "train-images-idx3-ubyte.gz")
    labels = _read_idx(FASHION_ROOT / "train-labels-idx1-ubyte.gz")
    classes = np.sort(rng.choice(10, size=4, replace=False))
    keep = np.concatenate([rng.choice(np.flatnonzero(labels == c), 1000, replace=False) for c in classes])
    keep = rng.permutation(keep)
    folder.mkdir(parents=True, exist_ok=True)
    subset_labels = np.searchsorted(classes, labels[keep])
    np.savez(folder / "fashion.npz", images=images[keep].astype(np.float32) / 255.0, labels=subset_labels)
    data = {"type": "arrays", "path": str(folder / "fashion.npz"),
            "transform": {"group": "so2", "angle_deg": [-180, 180], "seed": seed}}
    return DataSet(data, {"type": "so2", "angle_deg": [-180, 180]}, 4, subset_labels,
                   notes={"classes": classes.tolist()})


# --- cryo-EM particles (ASPIRE) --------------------------------------------------------------------

SNRS = {"snr1": 1.0, "snr0.1": 0.1, "snr0.05": 0.05}


def simulate_particles(folder: Path, *, side: int, n_volumes: int, views_per_volume: int, per_class: int,
                       snr: float, seed: int, max_shift: float, shares: tuple[float, ...] = ()) -> DataSet:
    """A particle stack simulated by ASPIRE: ``n_volumes`` random asymmetric volumes, each seen
    along ``views_per_volume`` random directions (a class is one volume seen along one
    direction), uniform in-plane angles, shifts up to ``max_shift`` px, 5 CTF defoci
    (1.5-2.5 um), white noise at ``snr``; written as ``particles.mrcs`` and ``labels.npy``.
    ``per_class`` particles per class, or with ``shares`` (one per class) that many on average,
    shared out in those proportions."""
    import mrcfile
    from aspire.noise import WhiteNoiseAdder
    from aspire.operators import RadialCTFFilter
    from aspire.source import Simulation
    from aspire.volume import AsymmetricVolume

    volumes = AsymmetricVolume(L=side, C=n_volumes, seed=seed, dtype=np.float32).generate()
    n_classes = n_volumes * views_per_volume
    rng, labels, views = class_views(seed, n_classes, per_class, shares)
    n = len(labels)
    angles = np.zeros((n, 3), dtype=np.float32)
    angles[:, :2] = views[labels]
    angles[:, 2] = rng.uniform(0, 2 * np.pi, n)  # psi turns the projection in its plane
    filters = [RadialCTFFilter(defocus=d) for d in np.linspace(15000, 25000, 5)]
    sim = Simulation(L=side, n=n, vols=volumes, states=(labels // views_per_volume + 1).astype(int), angles=angles,
                     offsets=rng.uniform(-max_shift, max_shift, (n, 2)).astype(np.float32),
                     amplitudes=np.ones(n, dtype=np.float32), unique_filters=filters,
                     filter_indices=rng.integers(0, len(filters), n), noise_adder=WhiteNoiseAdder.from_snr(snr),
                     pixel_size=3.0, seed=seed, dtype=np.float32)
    images = sim.images[:].asnumpy().astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(folder / "particles.mrcs", overwrite=True) as mrc:
        mrc.set_data(images)
        mrc.set_image_stack()
        mrc.voxel_size = 3.0
    np.save(folder / "labels.npy", labels)
    data = {"type": "mrc", "path": str(folder / "particles.mrcs"), "labels": str(folder / "labels.npy")}
    return DataSet(data, {"type": "se2", "angle_deg": [-180, 180], "shift": 0.1}, n_classes, labels, images=images,
                   notes={"snr": snr, "side": side})


def class_sizes(n_classes: int, per_class: int, shares: tuple[float, ...] = ()) -> np.ndarray:
    """Particles of each class: ``per_class`` each, or ``n_classes * per_class`` shared out in
    proportion to ``shares`` (largest remainders, so the total is exact)."""
    if not shares:
        return np.full(n_classes, per_class)
    if len(shares) != n_classes:
        raise ValueError(f"{len(shares)} class shares for {n_classes} classes")
    exact = np.asarray(shares, dtype=float) / sum(shares) * n_classes * per_class
    sizes = np.floor(exact).astype(int)
    sizes[np.argsort(sizes - exact)[:n_classes * per_class - sizes.sum()]] += 1
    return sizes


def class_views(seed: int, n_classes: int, per_class: int,
                shares: tuple[float, ...] = ()) -> tuple[np.random.Generator, np.ndarray, np.ndarray]:
    """The stack's random source after its first draws: every particle's class, and each
    class's viewing direction (``(n_classes, 2)`` Euler angles rot and tilt, uniform on the sphere)."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(n_classes), class_sizes(n_classes, per_class, shares)))
    views = np.stack([rng.uniform(0, 2 * np.pi, n_classes), np.arccos(rng.uniform(-1, 1, n_classes))], axis=1)
    return rng, labels, views


def closest_views_deg(views: np.ndarray, views_per_volume: int) -> float | None:
    """The smallest angle between two viewing directions of one volume: two such classes a few
    degrees apart are the same picture, which no classifier can tell apart (a fact of the
    stack's labels, reported beside its accuracy; never read to choose a setting)."""
    if views_per_volume < 2:
        return None
    rot, tilt = views[:, 0], views[:, 1]
    directions = np.stack([np.sin(tilt) * np.cos(rot), np.sin(tilt) * np.sin(rot), np.cos(tilt)], axis=1)
    volume = np.arange(len(views)) // views_per_volume
    cosines = np.clip(directions @ directions.T, -1, 1)
    same = (volume[:, None] == volume[None, :]) & ~np.eye(len(views), dtype=bool)
    return float(np.degrees(np.arccos(cosines[same].max())))


@dataclass(frozen=True)
class ParticleStack:
    """How one particle family's stacks are simulated (:func:`simulate_particles`); a seed's stack
    is simulated from ``seed_offset + seed``."""

    side: int
    n_volumes: int
    views_per_volume: int
    per_class: int
    seed_offset: int
    max_shift: float
    shares: tuple[float, ...] = ()  # unequal classes: each one's share of the particles (see class_sizes)

    def make(self, folder: Path, seed: int, variant: str) -> DataSet:
        return simulate_particles(folder, side=self.side, n_volumes=self.n_volumes,
                                  views_per_volume=self.views_per_volume, per_class=self.per_class,
                                  snr=SNRS[variant], seed=self.seed_offset + seed, max_shift=self.max_shift,
                                  shares=self.shares)

    def closest_views_deg(self, seed: int) -> float | None:
        """:func:`closest_views_deg` of the seed's stack, without simulating it."""
        n_classes = self.n_volumes * self.views_per_volume
        _, _, views = class_views(self.seed_offset + seed, n_classes, self.per_class, self.shares)
        return closest_views_deg(views, self.views_per_volume)


PARTICLES_64 = ParticleStack(side=64, n_volumes=5, views_per_volume=1, per_class=1000, seed_offset=0, max_shift=2.0)
PARTICLES_128 = ParticleStack(side=128, n_volumes=3, views_per_volume=2, per_class=500, seed_offset=100, max_shift=4.0)
PARTICLES_VIEWS = ParticleStack(side=64, n_volumes=4, views_per_volume=2, per_class=400, seed_offset=7, max_shift=2.0)
PARTICLES_96 = ParticleStack(side=96, n_volumes=3, views_per_volume=3, per_class=350, seed_offset=300, max_shift=3.0)
PARTICLES_80 = ParticleStack(side=80, n_volumes=2, views_per_volume=4, per_class=300, seed_offset=500, max_shift=2.5)
# unequal classes, the largest 35% and 30% of the particles, the smallest 5% and 4% (150 and 128)
SKEWED_DEV = ParticleStack(side=64, n_volumes=3, views_per_volume=2, per_class=500, seed_offset=700, max_shift=2.0,
                           shares=(0.35, 0.25, 0.15, 0.12, 0.08, 0.05))
PARTICLES_SKEWED = ParticleStack(side=80, n_volumes=4, views_per_volume=2, per_class=400, seed_offset=900,
                                 max_shift=2.5, shares=(0.30, 0.20, 0.14, 0.11, 0.09, 0.07, 0.05, 0.04))


FAMILIES: dict[str, Family] = {f.name: f for f in [
    Family("shapes_filled", DEVELOPMENT, "filled shapes: 3 (the issue's folder), 5, 8 by seed; 200 each, 40x40",
           make_shapes_filled),
    Family("digits", DEVELOPMENT, "scikit-learn digits (1,797), 16x16, turned in [-90, 90] deg", make_digits),
    Family("particles_64", DEVELOPMENT, "ASPIRE: 5 volumes, one view each, 5,000 particles of 64 px",
           stack=PARTICLES_64),
    Family("shapes_outline", HELD_OUT, "shape outlines: 2, 4, 6 by seed; 150 each, 48x48, noise 0.1",
           make_shapes_outline),
    Family("fashion_subsets", HELD_OUT, "4 Fashion-MNIST classes by seed, 1,000 each, full circle",
           make_fashion_subsets),
    Family("particles_128", HELD_OUT, "ASPIRE: 3 volumes x 2 views, 3,000 particles of 128 px",
           stack=PARTICLES_128),
    Family("particles_views", DEVELOPMENT, "ASPIRE: 4 volumes x 2 views, 3,200 particles of 64 px",
           stack=PARTICLES_VIEWS),
    Family("particles_96", HELD_OUT, "ASPIRE: 3 volumes x 3 views, 3,150 particles of 96 px",
           stack=PARTICLES_96),
    # added (and committed) after particles_96 had been rerun with settings chosen on a development
    # stack built to reproduce its failure: the one particle family no setting has seen
    Family("particles_80", HELD_OUT, "ASPIRE: 2 volumes x 4 views, 2,400 particles of 80 px",
           stack=PARTICLES_80),
    # added (and committed) before any run on it, when the held-out outlines' seed 1 showed the model
    # below its graph and no development family did
    Family("outlines_dev", DEVELOPMENT, "shape outlines: 3, 5, 4 by seed; 150 each, 48x48, noise 0.1, other draws",
           make_outlines_dev),
    # added together (and committed) before any run on either: every stack above has classes of
    # equal size, a real one rarely has
    Family("skewed_dev", DEVELOPMENT, "ASPIRE: 3 volumes x 2 views, 3,000 particles of 64 px, classes 35% to 5%",
           stack=SKEWED_DEV),
    Family("particles_skewed", HELD_OUT, "ASPIRE: 4 volumes x 2 views, 3,200 particles of 80 px, classes 30% to 4%",
           stack=PARTICLES_SKEWED),
]}
