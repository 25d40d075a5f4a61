"""Training-free pose-invariant clustering: a neighbour graph under the best relative pose.

Two images are similar when one of them, moved by *some* element of a small search grid
of the group, looks like the other. The recipe, for any :class:`~mcvae_framework.interfaces.LieGroup`:

1. ``group.prealign`` removes what a cheap normalisation can remove (centring on the
   centre of mass for translations, the radius of gyration for scales; nothing by
   default), then a light Gaussian blur makes small misalignments cheap (or, with
   ``features="wavelets"``, oriented edge maps replace the pixels:
   :mod:`~mcvae_framework.graph.wavelets`; filled silhouettes compete where outlines are all
   an image shows: :mod:`~mcvae_framework.graph.silhouettes`);
2. similarity of images ``i`` and ``j`` = the best cosine similarity between ``x_i`` and
   ``g . x_j`` over the elements ``g`` of ``group.search_elements()`` (by default ``exp`` of
   ``group.search_poses()``; volumes too, for a group that moves them); optionally in a PCA
   space of the moved images, which keeps 70,000 images in bounded memory and time;
3. the ``neighbours`` most similar images of each image (chunked: only the top-k of every
   row is ever kept), symmetrised into a sparse graph;
4. the graph's spectral embedding (leading eigenvectors of its normalised adjacency,
   :func:`scipy.sparse.linalg.eigsh`, weighted as a diffusion map), rows normalised,
   clustered by k-means (scikit-learn), optionally held to equal cluster sizes
   (``balanced``: an optimal-transport assignment, POT's Sinkhorn).

A limited search grid is enough for a wide pose range, because the graph chains small
relative moves; it also keeps shapes apart that only a large move maps onto each other
(a 6 and a 9 under a half turn).

The result (:class:`GraphClusters`) carries the labels, which images sit near their
cluster's centre (the "confident" ones a model can learn from), and every image's
neighbours. :func:`invariant_graph_clusters` is the whole method; the trainer uses it to
guide the mixture prior (see ``docs/concepts.md``), the benchmark reports it as a row.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA

from ..config.sections import GraphConfig
from .spectral import balanced_kmeans, bridge_components, modularity, spectral_clusters, symmetric_graph  # noqa: F401
from .spectral import describe_moves, refined_partition, spectral_partition
from .chunks import as_image_source, transformed
from .neighbours import neighbour_search as search_neighbours
from .noise import NOISE_SPECTRUM_MAX_DIM, noise_weighted_axes
from .silhouettes import MIN_CONTRAST, silhouette_contrast, silhouette_images
from .solvers import solver_choices
from .synchronisation import best_moves, pose_trust_info, synchronise, synchronises_orthogonally
from .synchronisation import synchronise_angles  # noqa: F401  (its home before synchronisation.py took it)
from .wavelets import wavelet_features

log = logging.getLogger("mcvae_framework.graph.invariant_graph")


@dataclass
class GraphClusters:
    """What the invariant graph found for ``N`` images.

    :ivar labels: ``(N,)`` int64 cluster of every image, ``0..K-1``.
    :ivar confident: ``(N,)`` bool, the images nearest their cluster's centre in the
        spectral embedding (``confident_fraction`` of each cluster).
    :ivar neighbours: ``(N, k)`` int64 indices of every image's most similar images.
    :ivar similarities: ``(N, k)`` float32, their pose-invariant similarities.
    :ivar angles: ``(N,)`` float32 rotation angle of every image from angular
        synchronisation of its cluster (radians, up to one offset per cluster, which
        centres the cluster's angles on the pose range), or ``None`` for groups without
        a rotation.
    :ivar seconds: wall time of the whole method.
    :ivar poses: ``(N, d, d)`` float32 orthogonal pose of every image from the
        synchronisation of its cluster (:mod:`~mcvae_framework.graph.synchronisation`, up to
        one orthogonal matrix per cluster), for a group with an orthogonal part that the
        angles do not describe (a discrete part, or rotations of volumes); else ``None``.
    :ivar pose_trust: ``(N,)`` float32 in ``[0, 1]``: how well every image's synchronised pose
        agrees with its neighbours' relative poses (:func:`~mcvae_framework.graph.synchronisation.pose_trust`);
        ``None`` without angles or poses.
    """

    labels: torch.Tensor
    confident: torch.Tensor
    neighbours: torch.Tensor
    similarities: torch.Tensor
    angles: torch.Tensor | None = None
    seconds: float = 0.0
    info: dict = field(default_factory=dict)
    poses: torch.Tensor | None = None
    pose_trust: torch.Tensor | None = None

    def state_dict(self) -> dict:
        return {"labels": self.labels, "confident": self.confident, "neighbours": self.neighbours,
                "similarities": self.similarities, "angles": self.angles, "seconds": self.seconds,
                "info": dict(self.info), "poses": self.poses,
                "pose_trust": self.pose_trust}

    @classmethod
    def from_state_dict(cls, state: dict) -> "GraphClusters":
        return cls(**state)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """``(N, C, H, W)`` images (``(N, C, D, H, W)`` volumes) blurred by a separable Gaussian of
    ``sigma`` pixels (the border replicated). One small matrix product per axis, ``B_H @ x @ B_W.T``:
    on a CPU about ten times faster than a depthwise convolution of the same kernel (a grouped
    ``conv3d``: four times slower for volumes)."""
    if sigma <= 0:
        return images
    rows = blur_matrix(images.shape[-2], sigma).to(images)
    columns = rows if images.shape[-1] == images.shape[-2] else blur_matrix(images.shape[-1], sigma).to(images)
    out = rows @ images @ columns.T
    if images.dim() == 5:  # the depth axis moved next to last, blurred, moved back
        depth = blur_matrix(images.shape[-3], sigma).to(images)
        out = (depth @ out.transpose(-3, -2)).transpose(-3, -2)
    return out


def blur_matrix(size: int, sigma: float) -> torch.Tensor:
    """``(size, size)``: a 1-D Gaussian of ``sigma`` pixels, taps beyond the ends taken from
    the end pixel (replicate padding)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    matrix = torch.zeros(size, size, dtype=torch.float64)
    for offset, weight in zip(range(-radius, radius + 1), kernel):
        source = torch.arange(size) + offset
        matrix[torch.arange(size), source.clamp(0, size - 1)] += weight
    return matrix


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.flatten(1), dim=1)


def image_descriptor(features: str = "pixels", *, blur_sigma: float = 1.0, orientations: int = 8):
    """The function from an ``(B, C, H, W)`` batch to the rows the similarity compares.

    ``"pixels"``: the blurred image, unit-normalised (compared by cosine as it is).
    ``"wavelets"``: :func:`~mcvae_framework.graph.wavelets.wavelet_features` (oriented edges, log
    moduli), which :func:`fit_projection` standardises and centres before the cosine.
    """
    if features == "pixels":
        return lambda batch: _unit_rows(gaussian_blur(batch, blur_sigma))
    if features == "wavelets":
        return lambda batch: wavelet_features(batch, orientations)
    raise ValueError(f"invariant graph: unknown features {features!r}; use 'pixels' or 'wavelets'")


#: at most this many pixels (voxels) of moved copies are held at once (volumes, big search grids).
MOVED_PIXELS_AT_ONCE = 1 << 26


def moved_features(images: torch.Tensor, group, poses: torch.Tensor | None, *, blur_sigma: float = 1.0,
                   batch_size: int = 1024, project=None, describe=None,
                   elements: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The features the similarity compares.

    :param poses: ``(M, dim)`` coordinates of the search moves (their ``exp``), or ``None``
        with ``elements``.
    :param elements: the ``M`` search moves as group elements (``group.search_elements``).
    :param describe: batch -> rows (:func:`image_descriptor`; default: blurred pixels).
    :param project: applied to every chunk's rows (e.g. a PCA projection), so that the
        full-size features of all images are never held at once.
    :returns: ``(reference (N, D), moved (M, N, D))``: the prealigned images' features and
        those of their copies moved by each of the ``M`` search poses.
    """
    describe = describe or image_descriptor("pixels", blur_sigma=blur_sigma)
    project = project or (lambda rows: rows)
    n = images.shape[0]
    elements = group.exp(poses.to(images.dtype)) if elements is None else elements.to(images.dtype)
    # a chunk's copies stay within MOVED_PIXELS_AT_ONCE (a volume of 24^3 under 600 moves: 8 at once)
    batch_size = max(1, min(batch_size, MOVED_PIXELS_AT_ONCE // max(1, elements.shape[0] * images[0].numel())))
    reference = moved = None
    for start in range(0, n, batch_size):
        chunk = group.prealign(images[start:start + batch_size])
        rows = project(describe(chunk))
        m, b = elements.shape[0], chunk.shape[0]
        copies = group.act(chunk.repeat(m, *[1] * (chunk.dim() - 1)), elements.repeat_interleave(b, dim=0))
        if reference is None:  # written into place: a list of chunks, concatenated, would hold them twice
            reference, moved = rows.new_empty(n, rows.shape[1]), rows.new_empty(m, n, rows.shape[1])
        reference[start:start + b] = rows
        moved[:, start:start + b] = project(describe(copies)).view(m, b, -1)
    return reference, moved


#: the projection is fitted on at most this many pixels (voxels) of images and moved copies.
FIT_PIXELS = 1 << 27


def fit_projection(images: torch.Tensor, group, poses: torch.Tensor | None, dim: int, *, blur_sigma: float = 1.0,
                   seed: int, fit_images: int = 2000, describe=None, standardise: bool = False,
                   elements: torch.Tensor | None = None, denoise: bool = False, info: dict | None = None):
    """A projection fitted on the features of a seeded sample of the images and their moved
    copies (at most :data:`FIT_PIXELS` pixels: for volumes, fewer images and moves; ``elements``
    the moves, else ``exp`` of ``poses``): optionally each feature scaled to unit variance
    (``standardise``), then the leading ``dim`` PCA axes kept (0: all, centred only), and the
    rows renormalised, so that dot products are cosines.

    With ``denoise``, ``dim`` is an upper bound: :func:`~mcvae_framework.graph.noise.noise_weighted_axes`
    keeps the axes above the features' noise, Wiener-weighted (``info``: axes kept, floor).
    """
    rng = np.random.default_rng(seed)
    elements = group.exp(poses.to(torch.float32)) if elements is None else elements
    copies = max(1, FIT_PIXELS // (min(fit_images, len(images)) * images[0].numel()))
    if copies < len(elements):
        elements = elements[torch.as_tensor(np.sort(rng.choice(len(elements), copies, replace=False)))]
    fit_images = min(fit_images, max(1, FIT_PIXELS // (len(elements) * images[0].numel())))
    sample = images[torch.as_tensor(np.sort(rng.choice(len(images), min(fit_images, len(images)), replace=False)))]
    reference, moved = moved_features(sample, group, None, blur_sigma=blur_sigma, describe=describe,
                                      elements=elements)
    pool = torch.cat([reference, moved.flatten(0, 1)]).double()
    scale = torch.ones(pool.shape[1], dtype=torch.float64)
    if standardise:
        spread = pool.std(dim=0)
        scale = spread + 1e-3 * spread.mean()  # near-constant features must not blow up
    pool = pool / scale
    scale = scale.float()
    if denoise and pool.shape[1] <= NOISE_SPECTRUM_MAX_DIM:
        axes, mean, floor = noise_weighted_axes(pool, images_seen=len(sample), at_most=dim or pool.shape[1])
        if info is not None:
            info.update(pca_dim=int(axes.shape[0]), noise_floor=floor)
        return lambda rows: F.normalize((rows / scale - mean) @ axes.T, dim=-1)
    if info is not None:
        info.update(pca_dim=min(dim, pool.shape[1]) if dim else 0)
    if not dim or dim >= pool.shape[1]:
        mean = pool.mean(dim=0).float()
        return lambda rows: F.normalize(rows / scale - mean, dim=-1)
    pca = PCA(n_components=dim, random_state=seed, svd_solver="randomized").fit(pool.numpy())
    axes = torch.as_tensor(pca.components_, dtype=torch.float32)
    mean = torch.as_tensor(pca.mean_, dtype=torch.float32)
    return lambda rows: F.normalize((rows / scale - mean) @ axes.T, dim=-1)


def relative_angles(reference: torch.Tensor, moved: torch.Tensor, neighbours: torch.Tensor,
                    angles: torch.Tensor) -> torch.Tensor:
    """``(N, k)`` rotation ``r_ij`` with ``x_i ~ R(r_ij) . x_j`` for every neighbour ``j`` of ``i``.

    The best search pose of the pair, refined between the grid's angles by the vertex of
    the parabola through the similarities at the best angle and its two grid neighbours.

    :param angles: ``(M,)`` rotation angle of each search pose, evenly spaced and sorted.
    """
    # (N, k, M), a chunk of rows at a time to bound memory; written into one tensor, since a
    # list of small chunk results between the large temporaries fragments the heap (+650 MB
    # of peak memory at 20,000 images, growing with N)
    similarity = reference.new_empty(len(reference), neighbours.shape[1], len(moved))
    for start in range(0, len(reference), 256):
        similarity[start:start + 256] = torch.einsum("nd,mnkd->nkm", reference[start:start + 256],
                                                     moved[:, neighbours[start:start + 256]])
    best = similarity.argmax(-1)
    angle = angles[best]
    m = len(angles)
    # a grid that closes the circle has no ends: the poses before the first and after the last wrap
    circle = m > 2 and abs(float(angles[1] - angles[0]) * m - 2 * math.pi) < 1e-4
    inner = torch.ones_like(best, dtype=torch.bool) if circle else (best > 0) & (best < m - 1)
    if m > 2:
        below, above = ((best - 1) % m, (best + 1) % m) if circle else ((best - 1).clamp_min(0),
                                                                        (best + 1).clamp_max(m - 1))
        lower = similarity.gather(-1, below.unsqueeze(-1)).squeeze(-1)
        upper = similarity.gather(-1, above.unsqueeze(-1)).squeeze(-1)
        peak = similarity.gather(-1, best.unsqueeze(-1)).squeeze(-1)
        curvature = lower - 2 * peak + upper
        shift = torch.where(curvature < 0, 0.5 * (lower - upper) / curvature.clamp_max(-1e-12), 0.0)
        step = float(angles[1] - angles[0])
        angle = angle + torch.where(inner, shift.clamp(-0.5, 0.5) * step, 0.0)
    return angle


def central_members(labels: np.ndarray, distance: np.ndarray, fraction: float) -> np.ndarray:
    """``(N,)`` bool: in every cluster, the ``fraction`` of its members nearest its centre."""
    keep = np.zeros(len(labels), dtype=bool)
    for cluster in np.unique(labels):
        members = np.flatnonzero(labels == cluster)
        count = max(1, int(round(fraction * len(members))))
        keep[members[np.argsort(distance[members], kind="stable")[:count]]] = True
    return keep


def invariant_graph_clusters(images: torch.Tensor, group, n_clusters: int, settings=None, *, seed: int = 0,
                             chunk_size: int = 1024, progress: bool = False, **options) -> GraphClusters:
    """Cluster ``(N, C, H, W)`` images (or ``(N, C, D, H, W)`` volumes, for a group that moves
    volumes) into ``n_clusters`` pose-invariant groups, no training.

    :param group: the :class:`~mcvae_framework.interfaces.LieGroup` of the nuisance; its
        ``search_elements`` (by default ``exp`` of ``search_poses``) and ``prealign`` define
        the invariance.
    :param settings: a :class:`~mcvae_framework.config.sections.GraphConfig` (the ``graph``
        section of a config, where every setting and its default is described); ``options``
        override its fields (``neighbours=15``, ``features="wavelets"``, ...).

    Settings left at ``auto`` are read from the data: the neighbours grow with the number of
    images, the search grid is the group's own (the built-in groups: the full circle when the
    pose range is the full circle), a PCA is used when the compared features are large, and
    where candidates compete (the features, the blur, the filled silhouettes of clean
    single-channel images) each is clustered and the one whose
    clusters cut its own graph most cleanly (the highest modularity, no label read) is kept.
    The candidates, their modularity and the choice are in the result's ``info``.

    :param images: a tensor, or an :class:`~mcvae_framework.graph.chunks.ImageChunks` that reads
        them a chunk at a time (a memory-mapped or streamed dataset is never held whole).
    """
    start = time.perf_counter()
    settings = GraphConfig.model_validate({**(settings or GraphConfig()).model_dump(), **options})
    if images.ndim not in (4, 5):
        raise ValueError(f"invariant graph: images must be a (N, C, H, W) batch (or (N, C, D, H, W) volumes), got "
                         f"shape {tuple(images.shape)}")
    n = images.shape[0]
    k = settings.resolved_neighbours(n)
    if n <= max(k, n_clusters):
        raise ValueError(
            f"invariant graph: {n} images are too few for {k} neighbours and "
            f"{n_clusters} clusters; give more images or lower graph.neighbours / the component count"
        )
    images = as_image_source(images)
    factor = max(1, min(images.shape[2:]) // settings.max_side)
    if factor > 1:  # a speed setting: comparing 2x2-averaged 64-px particles matched 64 px at 1/6 of the time
        images = _averaged_down(images, factor)
    with torch.no_grad():
        search_size = 0 if settings.search_size == "auto" else settings.search_size
        poses = group.search_poses(search_size).to(torch.float32)
        elements = group.search_elements(search_size).to(torch.float32)
        # the wavelets are planar: a volume's candidates are pixels only (and silhouettes, which
        # _offered_silhouettes then drops, or refuses where graph.silhouettes says true)
        candidates = [c for c in settings.candidates()
                      if images.ndim == 4 or settings.features != "auto" or c["features"] != "wavelets"]
        candidates, contrast = _offered_silhouettes(candidates, images, settings.silhouettes, seed=seed)
        results = [_compare(images, group, (poses, elements), n_clusters, k, settings, candidate, seed=seed,
                            chunk_size=chunk_size, progress=progress) for candidate in candidates]
    chosen = max(results, key=lambda r: r["modularity"])
    labels, index, distance = chosen["labels"], chosen["neighbours"], chosen["distance"]
    labels, distance, cut = refined_partition(chosen["graph"], labels, distance, chosen["embedding"], settings,
                                              seed=seed)  # after modularity chose the features (it prefers equal sizes)
    confident = central_members(labels, distance, settings.confident_fraction)
    angles, synchronised, trust = synchronise(index, chosen["relative"], chosen["relative_moves"], labels, group,
                                              centre=_pose_range_centre(group), seed=seed)
    info = {"search_poses": int(elements.shape[0]), "neighbours": k, "downsample": factor,
            **{key: chosen[key] for key in ("features", "blur_sigma", "pca_dim", "noise_floor", "feature_dim",
                                            "modularity", "pieces", "pieces_bridged")},
            **({"silhouette_contrast": contrast} if contrast is not None else {}), **cut,
            "embedding_dim": settings.embedding_dim or 2 * n_clusters,
            "cluster_sizes": np.bincount(labels, minlength=n_clusters).tolist(), **chosen["search"],
            **solver_choices(n), **pose_trust_info(trust, labels, n_clusters),
            "candidates": [{key: r[key] for key in ("features", "blur_sigma", "modularity", "seconds")}
                           for r in results]}
    log.debug("invariant graph: %s", describe_choice(info))
    return GraphClusters(torch.as_tensor(labels), torch.as_tensor(confident), index, chosen["similarities"], angles,
                         time.perf_counter() - start, info, synchronised, trust)


def _compare(images, group, moves, n_clusters: int, k: int, settings, candidate: dict, *, seed: int,
             chunk_size: int, progress: bool) -> dict:
    """One candidate's graph and clusters: features, neighbours (and a reserve of more, to bridge
    pieces), relative angles (or relative orthogonal moves), spectral clusters, and their modularity.

    :param moves: ``(poses, elements)``: the search moves' coordinates and the moves themselves."""
    tic = time.perf_counter()
    poses, elements = moves
    features, blur = candidate["features"], candidate["blur_sigma"]
    if features == "silhouettes":  # the masks are compared as pixels are
        images, features = silhouette_images(images), "pixels"
    describe = image_descriptor(features, blur_sigma=blur, orientations=settings.wavelet_orientations)
    size = int(describe(group.prealign(images[:1])).shape[1])
    pca_dim = settings.resolved_pca_dim(size)
    # Wavelet features mix scales (averages, edge moduli): each is standardised first.
    standardise = features != "pixels"
    project, projection = None, {"pca_dim": 0}
    if standardise or (pca_dim and pca_dim < size):
        project = fit_projection(images, group, None, pca_dim, seed=seed, describe=describe, standardise=standardise,
                                 elements=elements, denoise=settings.pca_dim == "auto", info=projection)
    reference, moved = moved_features(images, group, None, project=project, describe=describe, elements=elements)
    search = {}
    reserve, similarity = search_neighbours(reference, moved, 3 * k, method=settings.neighbour_search,
                                            approximate_above=settings.approximate_above, chunk_size=chunk_size,
                                            progress=progress, seed=seed, info=search)
    index = reserve[:, :k]
    relative = relative_moves = None
    angle_columns = list(group.angle_coordinates)
    if synchronises_orthogonally(group) and len(elements) > 1:
        # a discrete part, or rotations of volumes: synchronise orthogonal matrices
        relative_moves = group.orthogonal_part(elements)[best_moves(reference, moved, index)]
    elif angle_columns and len(poses) > 1:
        grid = poses[:, angle_columns[0]]
        order = torch.argsort(grid)
        in_order = bool((order == torch.arange(len(order))).all())  # then no copy of all moved rows
        relative = relative_angles(reference, moved if in_order else moved[order], index, grid[order])
    del moved
    edges, pieces, bridged = bridge_components(index.numpy(), reserve.numpy(), similarity.numpy(), n_clusters)
    graph = symmetric_graph(index.numpy(), edges)
    labels, distance, embedding = spectral_partition(
        graph, n_clusters, embedding_dim=settings.embedding_dim or 2 * n_clusters, seed=seed,
        diffusion_time=settings.diffusion_time, kmeans_restarts=settings.kmeans_restarts, balanced=settings.balanced)
    return {"features": candidate["features"], "blur_sigma": blur, "pca_dim": projection["pca_dim"],
            "noise_floor": projection.get("noise_floor"),
            "feature_dim": int(reference.shape[1]), "neighbours": index, "similarities": similarity[:, :k],
            "relative": relative, "relative_moves": relative_moves, "labels": labels, "distance": distance,
            "modularity": modularity(graph, labels), "graph": graph, "embedding": embedding,
            "pieces": pieces, "pieces_bridged": bridged, "search": search, "seconds": time.perf_counter() - tic}


def _offered_silhouettes(candidates: list[dict], images, setting, *, seed: int) -> tuple[list[dict], float | None]:
    """The candidates, less the silhouettes where they mean nothing, and the images' foreground
    contrast in noise deviations (``None`` when no silhouette was asked for): ``auto`` keeps them
    for single-channel images at :data:`~mcvae_framework.graph.silhouettes.MIN_CONTRAST` or more,
    ``true`` for any single-channel images."""
    if not any(c["features"] == "silhouettes" for c in candidates):
        return candidates, None
    planar = images.ndim == 4 and images.shape[1] == 1
    if setting is True and not planar:
        raise ValueError(f"invariant graph: graph.silhouettes: true needs single-channel 2-D images, got shape "
                         f"{tuple(images.shape)}; set graph.silhouettes to auto or false")
    contrast = silhouette_contrast(images, seed=seed)  # 0 for colour images and volumes
    if setting is True or contrast >= MIN_CONTRAST:
        return candidates, contrast
    return [c for c in candidates if c["features"] != "silhouettes"], contrast


def describe_choice(info: dict) -> str:
    """One line of what the graph chose (for ``train.log``)."""
    compared = ", ".join(f"{c['features']}" + (f" blur {c['blur_sigma']:g}" if c["features"] != "wavelets" else "")
                         + f": {c['modularity']:.3f}" for c in info["candidates"])
    pieces = (f"; its {info['pieces']} pieces bridged to {info['pieces_bridged']}"
              if info["pieces"] != info["pieces_bridged"] else f"; {info['pieces']} connected piece(s)")
    return (f"{info['neighbours']} neighbours, {info['search_poses']} search poses, "
            f"{'images averaged down ' + str(info['downsample']) + 'x, ' if info['downsample'] > 1 else ''}"
            f"{info['features']} features (blur {info['blur_sigma']:g}, "
            f"{_projection_words(info)}){pieces}; modularity of the "
            f"candidates: {compared}{_silhouette_words(info)}{describe_moves(info)}; "
            f"clusters of sizes {info['cluster_sizes']}"
            + (f"; pose trust of the clusters {info['pose_trust']}" if info.get("pose_trust") else ""))


def _silhouette_words(info: dict) -> str:
    contrast = info.get("silhouette_contrast")
    if contrast is None or any(c["features"] == "silhouettes" for c in info["candidates"]):
        return ""
    return f" (no silhouettes: foreground contrast {contrast:.3g} noise deviations, below {MIN_CONTRAST:g})"


def _projection_words(info: dict) -> str:
    if not info["pca_dim"] or info.get("noise_floor") is None:
        return f"PCA {info['pca_dim']}" if info["pca_dim"] else "no PCA"
    return f"PCA {info['pca_dim']} axes above the noise floor {info['noise_floor']:.2g}, Wiener-weighted"


def _averaged_down(images, factor: int):
    """The images averaged over ``factor x factor`` blocks, read lazily when they are chunks."""
    pool = F.avg_pool3d if images.ndim == 5 else F.avg_pool2d  # volumes: factor^3 voxels into one
    channels, *sides = images.shape[1:]
    return transformed(images, lambda batch: pool(batch, factor), (channels, *(side // factor for side in sides)))


def _pose_range_centre(group) -> float:
    """Middle of the group's configured angle range (radians; 0 when it has none)."""
    angle_deg = getattr(getattr(group, "config", None), "angle_deg", None)
    return math.radians(0.5 * (angle_deg[0] + angle_deg[1])) if angle_deg is not None else 0.0
