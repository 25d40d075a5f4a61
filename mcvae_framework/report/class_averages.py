"""Class averages: each cluster's members moved back by their inferred poses and averaged,
as 2-D classification ends in RELION, cryoSPARC, ASPIRE or EMAN2.

A member ``x = g . x0`` is brought into its cluster's frame by the group's own action
with the inverse pose, ``g^-1 . x`` (``group.act(x, group.inverse(group.element(tau, k)))``,
``k`` the component for a group with a discrete part: a mirror image is flipped back), so
the same code averages under any group a plugin supplies; without a group the members are
averaged as they are.

Per class: its size, the mean posterior probability of its members, and a resolution-like
figure in the cryo-EM convention: the members are split into two random halves, each half
averaged, and the **Fourier ring correlation** (FRC) of the two half-averages computed ring
by ring; the class's resolution is the period (in pixels, or Angstrom with a pixel size) of
the first ring where the FRC falls below 1/7 (0.143, the threshold of the gold-standard
half-map FSC). The same curve between two single aligned members (:func:`member_frc`)
says how much sharper the average is than one image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

#: the FRC threshold of the resolution figure (1/7, as the gold-standard FSC's 0.143).
FRC_THRESHOLD = 1.0 / 7.0


@torch.no_grad()
def aligned_images(group, images: torch.Tensor, tau: torch.Tensor | None,
                   component: torch.Tensor | None = None) -> torch.Tensor:
    """``images`` moved back into their canonical frame: ``g^-1 . x`` with ``g = exp(tau)``
    (``element(tau, component)`` for a group with a discrete part), through the group's own
    ``exp``, ``inverse`` and ``act``; unchanged without a group."""
    if group is None or tau is None:
        return images.float()
    images = images.float()
    pose = group.exp(tau.to(images.dtype)) if component is None else group.element(tau.to(images.dtype), component)
    return group.act(images, group.inverse(pose))


def fourier_ring_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """FRC of two images ``(C, H, W)`` or ``(H, W)`` ring by ring, rings ``0 .. H // 2``
    (integer radii in Fourier pixels; channels summed).

    ``FRC(r) = Re sum F1 F2* / sqrt(sum |F1|^2 sum |F2|^2)`` over the Fourier pixels of ring
    ``r``; 1 for identical images, about 0 for unrelated noise. A ring where either image
    has no power is NaN.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"FRC needs images of one shape, got {a.shape} and {b.shape}")
    a = a[None] if a.ndim == 2 else a
    b = b[None] if b.ndim == 2 else b
    h, w = a.shape[-2:]
    fa, fb = np.fft.fft2(a), np.fft.fft2(b)
    ky = np.fft.fftfreq(h) * h
    kx = np.fft.fftfreq(w) * w
    radius = np.rint(np.hypot(ky[:, None], kx[None, :])).astype(np.int64)
    n_rings = min(h, w) // 2 + 1
    inside = radius < n_rings
    rings = radius[inside]
    cross = np.bincount(rings, (fa * np.conj(fb)).real.sum(0)[inside], minlength=n_rings)
    power_a = np.bincount(rings, (np.abs(fa) ** 2).sum(0)[inside], minlength=n_rings)
    power_b = np.bincount(rings, (np.abs(fb) ** 2).sum(0)[inside], minlength=n_rings)
    with np.errstate(invalid="ignore", divide="ignore"):
        return cross / np.sqrt(power_a * power_b)


def resolution_from_frc(frc: np.ndarray, side: int, threshold: float = FRC_THRESHOLD) -> float:
    """The period in pixels (``side / r``) of the first ring ``r >= 1`` whose FRC falls below
    ``threshold``; Nyquist (2 pixels) when the curve stays above it, NaN when it is unknown
    (fewer than two members)."""
    frc = np.asarray(frc, dtype=np.float64)
    if frc.size < 2 or not np.isfinite(frc[1:]).any():
        return float("nan")
    below = np.flatnonzero(~(frc[1:] >= threshold))  # NaN counts as below: no signal there
    ring = int(below[0]) + 1 if below.size else frc.size - 1
    return float(side) / ring


@dataclass
class ClassAverages:
    """The class averages of one set of images and their figures (see the module docstring).

    ``averages`` ``(K, C, H, W)`` (zeros for an empty class); ``sizes`` ``(K,)``;
    ``mean_probability`` ``(K,)`` (NaN for an empty class); ``frc`` ``(K, H // 2 + 1)``
    between the two half-averages; ``member_frc`` the mean FRC of pairs of single aligned
    members; ``resolution`` and ``member_resolution`` the periods in pixels where those
    curves cross :data:`FRC_THRESHOLD`; ``pixel_size`` Angstrom per pixel of the images,
    when known.
    """

    averages: np.ndarray
    sizes: np.ndarray
    mean_probability: np.ndarray
    frc: np.ndarray
    member_frc: np.ndarray
    resolution: np.ndarray
    member_resolution: np.ndarray
    pixel_size: float | None = None
    extra: dict = field(default_factory=dict)

    def summary(self) -> list[dict]:
        """One JSON-ready row per class: ``cluster``, ``size``, ``mean_probability``,
        ``frc_resolution_px`` (and ``_angstrom`` with a pixel size),
        ``member_frc_resolution_px``."""
        rows = []
        for k in range(len(self.sizes)):
            row = {"cluster": k, "size": int(self.sizes[k]), "mean_probability": _finite(self.mean_probability[k]),
                   "frc_resolution_px": _finite(self.resolution[k]),
                   "member_frc_resolution_px": _finite(self.member_resolution[k])}
            if self.pixel_size:
                row["frc_resolution_angstrom"] = _finite(self.resolution[k] * self.pixel_size)
            rows.append(row)
        return rows


def _finite(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


@torch.no_grad()
def class_averages(images: torch.Tensor, clusters, probabilities=None, *, group=None, tau=None, component=None,
                   n_clusters: int | None = None, seed: int = 0, batch_size: int = 512, n_pairs: int = 32,
                   pixel_size: float | None = None) -> ClassAverages:
    """Average every cluster's members after moving each back by its pose.

    :param images: ``(N, C, H, W)`` the images as the model read them.
    :param clusters: ``(N,)`` cluster of each image.
    :param probabilities: ``(N, K)`` cluster probabilities (the mean of the assigned
        cluster's column is reported), or ``None``.
    :param group: the model's group (``model.group``), or ``None``.
    :param tau: ``(N, dim)`` inferred poses (Lie-algebra coordinates), or ``None``.
    :param component: ``(N,)`` inferred components, for a group with a discrete part, or ``None``.
    :param n_clusters: ``K`` (default: from ``probabilities``, else the largest cluster + 1).
    :param seed: the seed of the random halves and member pairs.
    :param n_pairs: pairs of single members whose FRC is averaged per class.
    :param pixel_size: Angstrom per pixel, reported beside the pixel figures.
    """
    clusters = torch.as_tensor(np.asarray(clusters), dtype=torch.int64)
    n, c, h, w = images.shape
    k = int(n_clusters or (probabilities.shape[1] if probabilities is not None else int(clusters.max()) + 1))
    rng = np.random.default_rng(seed)
    # every member gets a half (0 or 1): a random half of each class, sizes within one
    half = np.zeros(n, dtype=np.int64)
    for cluster in range(k):
        members = np.flatnonzero(clusters.numpy() == cluster)
        half[rng.permutation(members)[: len(members) // 2]] = 1
    half = torch.as_tensor(half)
    sums = torch.zeros(k, 2, c, h, w, dtype=torch.float64)
    for start in range(0, n, batch_size):
        part = slice(start, start + batch_size)
        moved = aligned_images(group, images[part], tau[part] if tau is not None else None,
                               component[part] if component is not None else None).double().cpu()
        sums.index_put_((clusters[part], half[part]), moved, accumulate=True)
    counts = torch.zeros(k, 2, dtype=torch.float64)
    counts.index_put_((clusters, half), torch.ones(n, dtype=torch.float64), accumulate=True)
    sizes = counts.sum(1)
    averages = (sums.sum(1) / sizes.clamp_min(1).view(k, 1, 1, 1)).float().numpy()
    halves = (sums / counts.clamp_min(1).view(k, 2, 1, 1, 1)).numpy()
    rings = min(h, w) // 2 + 1
    frc = np.full((k, rings), np.nan)
    member = np.full((k, rings), np.nan)
    for cluster in range(k):
        if counts[cluster].min() >= 1:
            frc[cluster] = fourier_ring_correlation(halves[cluster, 0], halves[cluster, 1])
        member[cluster] = _member_frc(group, images, (tau, component), np.flatnonzero(clusters.numpy() == cluster),
                                      rng, n_pairs)
    mean_probability = np.full(k, np.nan)
    if probabilities is not None:
        chosen = torch.as_tensor(np.asarray(probabilities)).double().gather(1, clusters.view(-1, 1)).view(-1)
        totals = torch.zeros(k, dtype=torch.float64).index_add_(0, clusters, chosen)
        mean_probability = np.where(sizes.numpy() > 0, (totals / sizes.clamp_min(1)).numpy(), np.nan)
    side = min(h, w)
    return ClassAverages(
        averages=averages, sizes=sizes.numpy().astype(np.int64), mean_probability=mean_probability, frc=frc,
        member_frc=member, resolution=np.array([resolution_from_frc(f, side) for f in frc]),
        member_resolution=np.array([resolution_from_frc(f, side) for f in member]), pixel_size=pixel_size,
    )


def _member_frc(group, images, poses, members: np.ndarray, rng, n_pairs: int) -> np.ndarray:
    """Mean FRC of up to ``n_pairs`` random pairs of distinct aligned members (``poses``:
    ``(tau, component)``, either ``None``)."""
    tau, component = poses
    rings = min(images.shape[-2:]) // 2 + 1
    if len(members) < 2:
        return np.full(rings, np.nan)
    firsts = rng.choice(members, size=n_pairs)
    seconds = np.array([rng.choice(members[members != a]) for a in firsts])
    pick = torch.as_tensor(np.concatenate([firsts, seconds]))
    moved = aligned_images(group, images[pick], tau[pick] if tau is not None else None,
                           component[pick] if component is not None else None).cpu().numpy()
    curves = [fourier_ring_correlation(moved[i], moved[n_pairs + i]) for i in range(n_pairs)]
    return np.nanmean(np.stack(curves), axis=0)


def write_mrcs(averages: np.ndarray, path, pixel_size: float | None = None) -> Path:
    """The class averages as an MRC image stack (``.mrcs``, float32, one section per class,
    the first channel), with ``pixel_size`` (Angstrom) in the header when known."""
    import mrcfile  # a core dependency, imported here: only cryo-EM outputs need it

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stack = np.ascontiguousarray(np.asarray(averages, dtype=np.float32)[:, 0])
    with mrcfile.new(path, overwrite=True) as handle:
        handle.set_data(stack)
        handle.set_image_stack()
        if pixel_size:
            handle.voxel_size = float(pixel_size)
    return path


def class_averages_figure(result: ClassAverages, path, columns: int = 5, title: str | None = None) -> Path:
    """``class_averages.png``: one tile per class, labelled with its size, mean probability
    and FRC resolution; an empty class is left blank."""
    from .plotting import _pyplot, _save

    plt = _pyplot()
    k = len(result.sizes)
    columns = max(1, min(columns, k))
    rows = (k + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(2.1 * columns, 2.7 * rows), squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index >= k:
            continue
        ax.set_title(tile_caption(result, index), fontsize=7)
        if result.sizes[index]:
            image = result.averages[index]
            ax.imshow(image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1).clip(0, 1), cmap="gray")
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def tile_caption(result: ClassAverages, k: int) -> str:
    """``cluster 3 · 512 images\\np 0.97 · FRC 4.1 px`` (Angstrom with a pixel size)."""
    if not result.sizes[k]:
        return f"cluster {k} (empty)"
    figure = result.resolution[k]
    unit = "px"
    if result.pixel_size and np.isfinite(figure):
        figure, unit = figure * result.pixel_size, "Å"
    prob = result.mean_probability[k]
    line = f"p {prob:.2f} · " if np.isfinite(prob) else ""
    res = f"FRC {figure:.1f} {unit}" if np.isfinite(figure) else "FRC -"
    return f"cluster {k} · {int(result.sizes[k])} images\n{line}{res}"


__all__ = ["FRC_THRESHOLD", "ClassAverages", "aligned_images", "class_averages", "class_averages_figure",
           "fourier_ring_correlation", "resolution_from_frc", "tile_caption", "write_mrcs"]
