"""PNG figures of a trained MCE-VAE, behind ``mcvae plot``.

* ``reconstructions.png`` -- rows of inputs, reconstructions, canonical (pose-free)
  reconstructions and, where the dataset knows them, the true canonical images;
* ``latent_map.png`` -- the invariant cluster latent in 2-D (t-SNE or PCA), coloured by
  label and by cluster;
* ``prototypes.png`` -- each mixture component's mean decoded, moved by a sweep of poses
  (and by each other component's representative, for a group with a discrete part: its
  mirror image, say);
* ``training_curves.png`` -- the loss terms of ``metrics.csv`` per epoch.

Volumes (``(N, C, D, H, W)``) are shown as their projection along the depth axis (the
mean over ``D``, each brightened to its own maximum), as tomograms are viewed.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from torchvision.utils import make_grid

from ..config.components import build
from ..runtime.data import dataset_tensors
from ..runtime.run_layout import RunLayout
from .inference import load_run, predict_images


def _pyplot():
    """matplotlib's pyplot on the Agg backend (files only; works without a display). Imported
    here, not at the top: the backend must be chosen before pyplot is first imported."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def as_pictures(images: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` images as they are; ``(N, C, D, H, W)`` volumes as their projection
    along the depth (mean over ``D``), each scaled to its own maximum."""
    if images.dim() != 5:
        return images
    projection = images.float().mean(2)
    return projection / projection.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8)


def _grid_image(images: torch.Tensor, nrow: int, pad: int = 2) -> np.ndarray:
    """``(N, C, H, W)`` images (or volumes, see :func:`as_pictures`) in [0, 1] -> an
    ``(H', W', 3)`` array tiled ``nrow`` per row."""
    grid = make_grid(as_pictures(images.detach()).float().clamp(0, 1).cpu(), nrow=nrow, padding=pad, pad_value=1.0)
    return grid.permute(1, 2, 0).numpy()


def image_rows_figure(rows: dict[str, torch.Tensor], path, title: str | None = None) -> Path:
    """One named row of images per entry of ``rows`` (all ``(n, C, H, W)``, same ``n``),
    tiled with ``make_grid`` and labelled on the left.

    :param rows: ``{"input": x, "reconstruction": ..., ...}``.
    :param path: the PNG file to write.
    """
    plt = _pyplot()
    names = list(rows)
    n = len(next(iter(rows.values())))
    if any(len(r) != n for r in rows.values()):
        raise ValueError(f"every row needs the same number of images, got {[len(r) for r in rows.values()]}")
    rows = {name: as_pictures(r) for name, r in rows.items()}
    channels = max(r.shape[1] for r in rows.values())
    tiles = torch.cat([r.expand(-1, channels, -1, -1) if r.shape[1] == 1 else r for r in rows.values()])
    image = _grid_image(tiles, nrow=n)
    height, width = image.shape[:2]
    fig, ax = plt.subplots(figsize=(max(4.0, width / 40 + 1.5), max(1.5, height / 40 + 0.5)), dpi=100)
    ax.imshow(image, interpolation="nearest")
    step = height / len(names)
    ax.set_yticks([step * (i + 0.5) for i in range(len(names))], names)
    ax.set_xticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def embed_2d(points: np.ndarray, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D embedding of ``(N, d)`` points with scikit-learn.

    :param method: ``tsne``, ``pca``, or ``auto`` (t-SNE up to 3,000 points, else PCA,
        to keep the plot quick). A 1-D or 2-D latent is shown as it is.
    :returns: ``(N, 2)`` coordinates and the method used.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or len(points) < 2:
        raise ValueError(f"need an (N >= 2, d) array of latents, got shape {points.shape}")
    if method not in ("auto", "tsne", "pca"):
        raise ValueError(f"unknown embedding method {method!r}; use tsne, pca or auto")
    if points.shape[1] <= 2:
        coords = points if points.shape[1] == 2 else np.column_stack([points[:, 0], np.zeros(len(points))])
        return coords, "identity"
    if method == "auto":
        method = "tsne" if len(points) <= 3000 else "pca"
    if method == "pca" or len(points) < 5:
        return PCA(n_components=2, random_state=seed).fit_transform(points), "pca"
    perplexity = float(min(30.0, max(2.0, (len(points) - 1) / 3)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return tsne.fit_transform(points), "tsne"


def latent_map_figure(latents, clusters, path, labels=None, method: str = "auto", seed: int = 0) -> Path:
    """The invariant latent in 2-D, coloured by label (when given) and by cluster.

    :param latents: ``(N, d)`` posterior means of ``z_c``.
    :param clusters: ``(N,)`` cluster ids.
    :param labels: ``(N,)`` true labels, or ``None``.
    """
    plt = _pyplot()
    coords, used = embed_2d(latents, method, seed)
    colourings = ([("label", labels)] if labels is not None else []) + [("cluster", clusters)]
    fig, axes = plt.subplots(1, len(colourings), figsize=(5.5 * len(colourings), 5), squeeze=False)
    for ax, (name, values) in zip(axes[0], colourings):
        values = np.asarray(values)
        cmap = "tab10" if values.max(initial=0) < 10 else "tab20"
        scatter = ax.scatter(coords[:, 0], coords[:, 1], c=values, cmap=cmap, s=6, alpha=0.8, linewidths=0)
        ax.set_title(f"z_c ({used}), coloured by {name}")
        ax.set_xticks([])
        ax.set_yticks([])
        if np.unique(values).size <= 20:
            ax.legend(*scatter.legend_elements(num=None), loc="best", fontsize=7, title=name, markerscale=0.8)
    return _save(fig, path)


def pose_sweep(group, n: int, seed: int = 0, pool: int = 2000) -> torch.Tensor:
    """``n`` poses spread evenly over the group's configured pose distribution: the
    quantiles, by their first coordinate (the angle, for the built-in 2-D groups), of
    ``pool`` seeded draws from ``group.sample``."""
    tau = group.sample(max(pool, n), generator=torch.Generator().manual_seed(seed))
    tau = tau[torch.argsort(tau[:, 0])]
    picks = torch.linspace(0, len(tau) - 1, n + 2)[1:-1].round().long() if n > 1 else torch.tensor([len(tau) // 2])
    return tau[picks]


@torch.no_grad()
def prototype_images(model, n_poses: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each mixture component's mean decoded (style latent at its prior mean, 0), then
    moved by a sweep of poses (:func:`pose_sweep`), then, for a group with a discrete part,
    by the representative of each of its other components (e.g. the mirror image).

    :returns: images ``(K, 1 + n_poses (+ n_components - 1), C, ...)`` -- the canonical
        prototype, then its moved copies (only the canonical one when the model has no
        group) -- and the sweep's poses ``(n_poses, dim)`` (``None`` without a group).
    """
    model.eval()
    means = model.prior.component_means().detach()
    canonical = model.decode(means, None)  # the model fills z_v with its prior mean, 0
    columns, tau = [canonical], None
    group = model.group
    if group is not None and n_poses > 0 and group.dim > 0:  # a finite group has no continuous pose to sweep
        tau = pose_sweep(group, n_poses, seed).to(device=canonical.device, dtype=canonical.dtype)
        for j in range(n_poses):
            g = group.exp(tau[j:j + 1].expand(len(canonical), -1))
            columns.append(group.act(canonical, g))
    if group is not None and int(getattr(group, "n_components", 1)) > 1:
        for representative in group.component_elements(dtype=canonical.dtype, device=canonical.device)[1:]:
            columns.append(group.act(canonical, representative[None]))
    return torch.stack(columns, dim=1), tau


def component_labels(group) -> list[str]:
    """Column labels of the components after the first (``["reflection"]`` for O(2))."""
    k = int(getattr(group, "n_components", 1) or 1) if group is not None else 1
    names = tuple(getattr(group, "component_names", ()) or ())
    return [names[i] if i < len(names) else f"component {i}" for i in range(1, k)]


def prototypes_figure(model, path, n_poses: int = 8, seed: int = 0, counts=None, split: str | None = None) -> Path:
    """``prototypes.png``: one row per mixture component (see :func:`prototype_images`);
    the sweep's columns are labelled by the pose's first coordinate ``tau_0`` (the angle in
    radians for the built-in 2-D groups).

    :param counts: images assigned to each cluster (``K`` ints); rows are then labelled
        with their count, an empty cluster as ``(empty)`` and its prototype dimmed: it is
        the decoded mean of a component no image chose.
    :param split: the split ``counts`` were taken from, for the title.
    """
    plt = _pyplot()
    images, tau = prototype_images(model, n_poses, seed)
    if counts is not None:
        counts = [int(c) for c in counts]
        if len(counts) != images.shape[0]:
            raise ValueError(f"counts has {len(counts)} entries for {images.shape[0]} clusters")
        dim = torch.tensor([0.25 if c == 0 else 1.0 for c in counts], dtype=images.dtype, device=images.device)
        images = images * dim.view(-1, *([1] * (images.dim() - 1)))
    k, cols = images.shape[:2]
    grid = _grid_image(images.flatten(0, 1), nrow=cols)
    fig, ax = plt.subplots(figsize=(max(3.0, cols * 0.75 + 1.2), max(2.0, k * 0.7 + 0.8)), dpi=100)
    ax.imshow(grid, interpolation="nearest")
    step_y, step_x = grid.shape[0] / k, grid.shape[1] / cols
    labels = [f"cluster {i}" for i in range(k)]
    if counts is not None:
        labels = [f"{name} ({c:,} images)" if c else f"{name} (empty)" for name, c in zip(labels, counts)]
    ax.set_yticks([step_y * (i + 0.5) for i in range(k)], labels)
    names = ["canonical"] + ([f"{t:+.2f}" for t in tau[:, 0].tolist()] if tau is not None else [])
    names += component_labels(model.group) if len(names) < cols else []  # a discrete part's columns
    ax.set_xticks([step_x * (j + 0.5) for j in range(cols)], names, fontsize=7, rotation=45)
    if tau is not None:
        # name the swept coordinate as the group does (an angle only where it is one)
        names_of = tuple(getattr(model.group, "coordinate_names", ()) or ())
        ax.set_xlabel(f"pose tau_0 ({names_of[0]}) of the sweep" if names_of else "pose tau_0 of the sweep")
    title = "cluster prototypes (component means decoded)"
    if counts is not None:
        empty = sum(1 for c in counts if c == 0)
        title += f"\nimages per cluster: {split or 'shown'} split" + (
            f"; {empty} empty (dimmed: no image chose them)" if empty else "")
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def read_metrics(path) -> dict[str, np.ndarray]:
    """``metrics.csv`` as ``{column: float array}`` (empty cells become NaN)."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return {}

    def number(text):
        try:
            return float(text)
        except (TypeError, ValueError):
            return math.nan

    return {key: np.array([number(r.get(key)) for r in rows]) for key in rows[0]}


def training_curves_figure(metrics_csv, path) -> Path:
    """``training_curves.png``: one panel per loss term, train and test against epoch,
    plus training speed."""
    plt = _pyplot()
    columns = read_metrics(metrics_csv)
    if "epoch" not in columns:
        raise ValueError(f"{metrics_csv}: no `epoch` column (is it a metrics.csv written by `mcvae train`?)")
    epoch = columns["epoch"]
    terms = []
    for key in columns:
        for prefix in ("train_", "test_"):
            if key.startswith(prefix) and key[len(prefix):] not in terms:
                terms.append(key[len(prefix):])
    panels = terms + (["images_per_second"] if "images_per_second" in columns else [])
    ncols = min(4, max(1, len(panels)))
    nrows = max(1, math.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.8 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, panels):
        if name == "images_per_second":
            ax.plot(epoch, columns[name], marker="o", ms=3, color="grey")
        else:
            for prefix, style in (("train_", "-"), ("test_", "--")):
                values = columns.get(prefix + name)
                if values is not None and np.isfinite(values).any():
                    ax.plot(epoch, values, style, marker="o", ms=3, label=prefix.rstrip("_"))
            ax.legend(fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    return _save(fig, path)


def plot_run(run_dir, split: str = "test", out_dir=None, *, n_images: int = 12, n_poses: int = 8,
             method: str = "auto", max_points: int = 2000, device: str = "cpu", seed: int = 0,
             checkpoint: str = "last") -> dict[str, Path]:
    """Write every figure of a run folder (see the module docstring).

    :param run_dir: a folder written by ``mcvae train``.
    :param split: the dataset split the image figures use.
    :param out_dir: where the PNGs go (default ``RUN/plots``).
    :param n_images: images per row of ``reconstructions.png``.
    :param method: the latent map's embedding: ``tsne``, ``pca`` or ``auto``.
    :param max_points: images shown in the latent map (a seeded subsample).
    :param checkpoint: ``last`` or ``best`` (``checkpoints/<name>.pt``).
    :returns: ``{figure name: path}``.
    """
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else RunLayout(run_dir).plots
    config, model = load_run(run_dir, checkpoint, device=device)
    tensors = dataset_tensors(build("data", config.data, split=split))
    n = len(tensors["image"])
    pick = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: min(n, max_points)].sort().values
    subset = {k: v[pick] for k, v in tensors.items()}
    outputs = predict_images(model, subset["image"])
    written = {}
    # evenly spaced through the (class-ordered) subset, so that every class shows
    shown = torch.linspace(0, len(pick) - 1, min(n_images, len(pick))).round().long()
    rows = {"input": subset["image"][shown], "reconstruction": outputs["reconstruction"][shown],
            "canonical": outputs["canonical"][shown]}
    if "canonical" in subset:
        rows["true canonical"] = subset["canonical"][shown]
    written["reconstructions"] = image_rows_figure(rows, out_dir / "reconstructions.png",
                                                   title=f"{split} images")
    labels = subset["label"].numpy() if "label" in subset else None
    written["latent_map"] = latent_map_figure(outputs["z_cluster"].numpy(), outputs["cluster"].numpy(),
                                              out_dir / "latent_map.png", labels=labels, method=method, seed=seed)
    n_clusters = outputs["probabilities"].shape[1]
    counts = torch.bincount(predict_images(model, tensors["image"])["cluster"], minlength=n_clusters) \
        if n > len(pick) else torch.bincount(outputs["cluster"], minlength=n_clusters)
    written["prototypes"] = prototypes_figure(model, out_dir / "prototypes.png", n_poses=n_poses, seed=seed,
                                              counts=counts.tolist(), split=split)
    metrics_csv = RunLayout(run_dir).metrics
    if metrics_csv.is_file() and read_metrics(metrics_csv):
        written["training_curves"] = training_curves_figure(metrics_csv, out_dir / "training_curves.png")
    return written
