"""From neighbour lists to clusters: the symmetrised k-NN graph, its connected components
merged down to the cluster count by their best cross-component similarities, its spectral
embedding and k-means on it (optionally held to equal cluster sizes), the modularity that
tells, without labels, how cleanly a partition cuts the graph, the split-and-merge moves
that lower a partition's normalised cut where k-means made clusters of similar sizes out of
unequal classes, and the partition joined by the normalised cut from twice as many k-means
clusters (``graph.partition: merge``)."""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import cdist

from .solvers import fit_kmeans, leading_eigenvectors


def symmetric_graph(neighbours: np.ndarray, extra_edges: np.ndarray | None = None) -> scipy.sparse.csr_matrix:
    """The 0/1 adjacency where ``i ~ j`` when either is among the other's neighbours, plus
    ``extra_edges`` (``(E, 2)`` pairs: the bridges that merge components)."""
    neighbours = np.asarray(neighbours)
    n, k = neighbours.shape
    rows, cols = np.repeat(np.arange(n), k), neighbours.ravel()
    if extra_edges is not None and len(extra_edges):
        rows = np.concatenate([rows, extra_edges[:, 0]])
        cols = np.concatenate([cols, extra_edges[:, 1]])
    graph = scipy.sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    graph.data[:] = 1.0
    return graph.maximum(graph.T)


def bridge_components(neighbours: np.ndarray, reserve: np.ndarray, reserve_similarity: np.ndarray,
                      n_clusters: int) -> tuple[np.ndarray, int, int]:
    """Edges that join the k-NN graph's connected components down to ``n_clusters``.

    A pure neighbour graph can fall into more pieces than there are clusters (one class
    split in two where no image's few nearest neighbours cross the gap); its leading
    eigenvectors are then the pieces' indicators, and k-means splits a class and merges
    two others. The pieces are joined like single linkage, by the most similar pairs
    across them: ``reserve`` holds more neighbours of every image than the graph uses
    (``(N, R)``, best first) with their similarities, and the most similar pair between two
    pieces becomes an edge, most similar first, until ``n_clusters`` pieces are left (or
    the reserve lists link no more pieces).

    :returns: ``(edges (E, 2), pieces before, pieces after)``.
    """
    graph = symmetric_graph(neighbours)
    before, piece = connected_components(graph, directed=False)
    if before <= n_clusters:
        return np.zeros((0, 2), dtype=np.int64), before, before
    n = len(piece)
    rows = np.repeat(np.arange(n), reserve.shape[1])
    cols, sims = reserve.ravel(), reserve_similarity.ravel()
    across = piece[rows] != piece[cols]
    order = np.argsort(-sims[across], kind="stable")
    rows, cols = rows[across][order], cols[across][order]
    parent = list(range(before))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    edges, count = [], before
    for i, j in zip(rows, cols):
        a, b = root(piece[i]), root(piece[j])
        if a != b:
            parent[a] = b
            edges.append((i, j))
            count -= 1
            if count == n_clusters:
                break
    return np.asarray(edges, dtype=np.int64).reshape(-1, 2), before, count


def spectral_embedding(graph: scipy.sparse.csr_matrix, dim: int, *, diffusion_time: float, seed: int) -> np.ndarray:
    """Rows of the graph's leading eigenvectors, as a diffusion map.

    The eigenvectors ``v`` of the normalised adjacency ``D^-1/2 A D^-1/2`` with the ``dim``
    largest eigenvalues ``l`` (:func:`~mcvae_framework.graph.solvers.leading_eigenvectors`), mapped to random-walk
    coordinates ``D^-1/2 v`` and weighted by ``l ** diffusion_time``, so that the slow,
    cluster-level directions dominate and the choice of ``dim`` matters little (unweighted,
    rotated MNIST fell from 0.90 to 0.78 accuracy with one dimension too few).
    """
    n = graph.shape[0]
    scale = scipy.sparse.diags(1.0 / np.sqrt(np.asarray(graph.sum(1)).ravel()))
    normalised = scale @ graph @ scale
    dim = min(dim, n - 2)
    values, vectors = leading_eigenvectors(normalised, dim, seed=seed)  # ARPACK, or LOBPCG for large graphs
    weights = np.clip(values, 0.0, None) ** diffusion_time
    return (scale @ vectors) * weights


def balanced_kmeans(embedding: np.ndarray, centres: np.ndarray, *, iterations: int = 20,
                    temperature: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """k-means whose clusters are held to equal sizes, started from ``centres``.

    Every step assigns the rows to the centres by an entropic optimal transport with uniform
    marginals on both sides (POT's :func:`ot.sinkhorn` on the squared distances, as
    SeLa and SwAV balance their pseudo-labels), then moves every centre to the mean of its
    transported rows. Plain k-means on rotated Fashion-MNIST merges pullover, coat and shirt
    into one cluster of 4,700 images and splits the footwear over four; holding the sizes
    equal undoes part of that (protocol (d), seed 0: test accuracy 0.550 -> 0.581).

    :param temperature: the transport's entropy weight, against squared distances between
        unit rows (at most 4): smaller is closer to a hard assignment.
    :returns: ``(labels (N,), centres (K, D))``, a label being the row's largest transport.
    """
    import ot  # POT takes about a second to import; only balanced graphs need it

    n, k = len(embedding), len(centres)
    rows, columns = np.full(n, 1.0 / n), np.full(k, 1.0 / k)
    for _ in range(iterations):
        cost = cdist(embedding, centres, "sqeuclidean")  # (N, K): no (N, K, D) intermediate
        plan = ot.sinkhorn(rows, columns, cost, temperature, numItermax=1000, stopThr=1e-6, warn=False)
        centres = (plan.T @ embedding) / plan.sum(0).clip(min=1e-12)[:, None]
    return plan.argmax(1), centres


def spectral_clusters(graph: scipy.sparse.csr_matrix, n_clusters: int, *, embedding_dim: int, seed: int,
                      diffusion_time: float = 5.0, kmeans_restarts: int = 20,
                      balanced: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """k-means on the row-normalised spectral embedding of ``graph`` (the symmetrised k-NN
    graph, its pieces bridged: :func:`~mcvae_framework.graph.spectral.bridge_components`).

    :param balanced: refine the k-means clusters to equal sizes (:func:`balanced_kmeans`).
    :returns: ``(labels (N,), distance of every row to its cluster's centre (N,))``.
    """
    labels, distance, _ = spectral_partition(graph, n_clusters, embedding_dim=embedding_dim, seed=seed,
                                             diffusion_time=diffusion_time, kmeans_restarts=kmeans_restarts,
                                             balanced=balanced)
    return labels, distance


def spectral_partition(graph: scipy.sparse.csr_matrix, n_clusters: int, *, embedding_dim: int, seed: int,
                       diffusion_time: float = 5.0, kmeans_restarts: int = 20,
                       balanced: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`spectral_clusters`, and the row-normalised embedding the clusters were found in."""
    embedding = spectral_embedding(graph, embedding_dim, diffusion_time=diffusion_time, seed=seed)
    embedding /= np.linalg.norm(embedding, axis=1, keepdims=True).clip(min=1e-12)
    count, component = connected_components(graph, directed=False)
    if 1 < count <= n_clusters:
        # Pieces the graph never links are different clusters. Within a piece, slow diffusion
        # modes along the nuisance (a chain of rotations) can rival the gaps between pieces,
        # so the piece is added to the rows with enough weight that k-means never merges two.
        pieces = np.eye(count)[component]
        embedding = np.hstack([0.9 * pieces, math.sqrt(1 - 0.9**2) * embedding])
    labels, centres = fit_kmeans(embedding, n_clusters, restarts=kmeans_restarts, seed=seed)  # mini-batch if large
    if balanced:
        labels, centres = balanced_kmeans(embedding, centres)
    distance = np.linalg.norm(embedding - centres[labels], axis=1)
    return labels.astype(np.int64), distance, embedding


def centre_distances(embedding: np.ndarray, labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """``(N,)`` every row's distance to the mean of its cluster's rows."""
    centres = np.stack([embedding[labels == c].mean(0) if (labels == c).any() else np.zeros(embedding.shape[1])
                        for c in range(n_clusters)])
    return np.linalg.norm(embedding - centres[labels], axis=1)


#: split_and_merge never makes a cluster of fewer than 1/SMALLEST_SHARE of an equal share of the
#: images: the normalised cut of a sliver of a few images linked only to other clusters is 0, and on
#: scikit-learn's digits the cut then split off 20-27 images per move (the graph 0.897 -> 0.865)
SMALLEST_SHARE = 4
#: and joins two clusters only where they are at least this many times more linked (conductance)
#: than the two halves it cuts apart: the halves of the largest class of an unequal particle stack
#: 5.3 times (development `skewed_dev`, SNR 0.1: the graph 0.79 -> 1.000); on scikit-learn's digits,
#: whose classes blur into one another, moves at 1.7 and 2.2 times cost the graph 0.015-0.025
LINK_OVER_SEAM = 3


def split_and_merge(graph: scipy.sparse.csr_matrix, labels: np.ndarray, *, seed: int,
                    min_gain: float = 1e-3) -> tuple[np.ndarray, int]:
    """Moves that lower the partition's :func:`normalised_cut` at the same cluster count: one
    cluster split in two (:func:`bisection` of its own graph) while two others, or one of the
    halves and another, are merged; the best move is made while one lowers the cut by ``min_gain``.

    k-means on a spectral embedding favours clusters of similar sizes: where the classes are
    unequal (a particle stack whose largest class holds 35% of the particles and whose two
    smallest 8% and 5%) it splits the largest class and merges the two smallest, although its
    neighbour lists hardly link the two (29 edges between them, 658 between the halves). The
    graph itself tells the better partition: the one whose clusters keep more of their edges
    inside, each counted against its own volume (modularity, which penalises a large cluster by
    its squared volume, preferred the split: 0.793 against 0.762).

    :returns: ``(labels, moves made)``.
    """
    labels = np.asarray(labels).copy()
    k = int(labels.max()) + 1
    smallest = len(labels) / (SMALLEST_SHARE * k)
    coo = graph.tocoo()
    halves = {}  # a cluster's bisection, kept until the partition changes
    moves = 0
    for _ in range(k):
        inside, degree = _cluster_edges(coo, labels, k)
        base = _cut(inside, degree)
        best, best_gain = None, min_gain
        for split in range(k):
            members = np.flatnonzero(labels == split)
            if len(members) < 8:  # too few to cut by their spectrum
                continue
            if split not in halves:
                halves[split] = bisection(graph[members][:, members], seed=seed)
            if min(halves[split].sum(), (~halves[split]).sum()) < smallest:
                continue  # a sliver (a few images linked elsewhere) is no cluster
            trial = labels.copy()
            trial[members[halves[split]]] = k  # the second half: a cluster k + 1-th for now
            inside, degree = _cluster_edges(coo, trial, k + 1)
            links = _conductances(inside, degree)
            # each pair once; not the split undone, nor two clusters not far more linked than the halves
            allowed = np.triu(links >= LINK_OVER_SEAM * links[split, k], k=1)
            allowed[split, k] = False
            gain = np.where(allowed, base - _joined_cuts(inside, degree), -np.inf)
            a, b = np.unravel_index(int(np.argmax(gain)), gain.shape)  # the first best, row by row
            if gain[a, b] > best_gain:
                best, best_gain = (members[halves[split]], int(a), int(b)), gain[a, b]
        if best is None:
            break
        second_half, a, b = best
        labels[second_half] = k
        labels[labels == b] = a  # b joins a; the second half then takes b's label, so labels stay 0..k-1
        labels[labels == k] = b
        halves = {}
        moves += 1
    return labels, moves


def split_and_merge_refined(graph: scipy.sparse.csr_matrix, labels: np.ndarray, distance: np.ndarray,
                            embedding: np.ndarray, *, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """:func:`split_and_merge` on k-means clusters found in ``embedding``: the labels, every row's
    distance to its cluster's centre (measured again where a move was made), and what it did for
    the graph's info (``split_merge_moves``, ``normalised_cut`` before and after)."""
    before = normalised_cut(graph, labels)
    labels, moves = split_and_merge(graph, labels, seed=seed)
    if moves:
        distance = centre_distances(embedding, labels, int(labels.max()) + 1)
    return labels, distance, {"split_merge_moves": moves,
                              "normalised_cut": [round(before, 4), round(normalised_cut(graph, labels), 4)]}


def merged_partition(graph: scipy.sparse.csr_matrix, embedding: np.ndarray, n_clusters: int, *, seed: int,
                     restarts: int = 20, over: int = 2) -> np.ndarray:
    """``(N,)`` labels ``0..n_clusters-1``: k-means into ``over * n_clusters`` clusters on the
    spectral ``embedding``, then clusters joined two at a time, each time the pair whose join
    leaves the partition's lowest :func:`normalised_cut`, down to ``n_clusters``.

    k-means into the cluster count favours clusters of similar sizes: on a noisy particle stack
    whose classes hold 35% down to 5% of the particles it halved the largest class and joined two
    small ones, and no single move of :func:`split_and_merge` lowered the cut. With more
    clusters than classes, k-means cuts every class into pieces instead of joining two, and the
    pieces of one class, linked densely, are the first the cut joins back."""
    count = min(over * n_clusters, len(embedding))
    labels = np.unique(fit_kmeans(embedding, count, restarts=restarts, seed=seed)[0], return_inverse=True)[1]
    coo = graph.tocoo()
    for m in range(int(labels.max()) + 1, n_clusters, -1):
        cuts = _joined_cuts(*_cluster_edges(coo, labels, m))
        cuts[np.tril_indices(m)] = np.inf  # each pair once, a before b
        a, b = np.unravel_index(int(np.argmin(cuts)), cuts.shape)
        labels[labels == b] = a
        labels[labels > b] -= 1
    return labels.astype(np.int64)


def refined_partition(graph: scipy.sparse.csr_matrix, labels: np.ndarray, distance: np.ndarray,
                      embedding: np.ndarray, settings, *, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """The clusters k-means found on ``embedding`` as the ``graph`` settings (its config section)
    ask, with every row's distance to its cluster's centre and what was done, for the graph's
    info: kept (``balanced``), moved by :func:`split_and_merge` (``split_merge``), then replaced
    by :func:`merged_partition` (``partition: merge``). The merged clusters are numbered as the
    k-means ones they overlap most; where they are the same partition, the k-means labels and
    distances are kept as they are."""
    if settings.balanced:  # equal sizes asked for: neither route keeps them
        return labels, distance, {}
    info = {}
    if settings.split_merge:
        labels, distance, info = split_and_merge_refined(graph, labels, distance, embedding, seed=seed)
    if settings.partition != "merge":
        return labels, distance, info
    k = int(labels.max()) + 1
    merged = renumbered_as(merged_partition(graph, embedding, k, seed=seed, restarts=settings.kmeans_restarts), labels, k)
    info.update(partition="merge", merged_normalised_cut=[round(normalised_cut(graph, labels), 4),
                                                          round(normalised_cut(graph, merged), 4)],
                merge_moved_images=int((merged != labels).sum()))
    if not info["merge_moved_images"]:
        return labels, distance, info
    return merged, centre_distances(embedding, merged, k), info


def renumbered_as(labels: np.ndarray, reference: np.ndarray, k: int) -> np.ndarray:
    """``labels`` (``0..k-1``) renumbered so that each cluster takes the number of the
    ``reference`` cluster it shares most images with (the best one-to-one matching, Hungarian)."""
    from scipy.optimize import linear_sum_assignment

    overlap = np.zeros((k, k))
    np.add.at(overlap, (labels, reference), 1)
    rows, columns = linear_sum_assignment(-overlap)
    number = np.empty(k, dtype=np.int64)
    number[rows] = columns
    return number[labels]


def describe_moves(info: dict) -> str:
    """The moves (or the joins of ``partition: merge``) in the graph's log line (nothing where none was made)."""
    words = ""
    if info.get("split_merge_moves"):
        before, after = info["normalised_cut"]
        words = (f"; {info['split_merge_moves']} split-and-merge move(s) (graph.split_merge), normalised cut "
                 f"{before:.3f} -> {after:.3f}")
    if info.get("partition") == "merge":
        before, after = info["merged_normalised_cut"]
        words += (f"; clusters joined from twice as many k-means clusters (graph.partition: merge), normalised cut "
                  f"{before:.3f} -> {after:.3f}, {info['merge_moved_images']} image(s) moved")
    return words


def bisection(graph: scipy.sparse.csr_matrix, *, seed: int) -> np.ndarray:
    """``(n,)`` bool: a cluster's own graph cut in two by its spectral embedding (the leading
    non-trivial eigenvectors of its normalised adjacency, 2-means of their rows), the relaxed
    minimum normalised cut of Shi and Malik; pieces it does not link come apart first."""
    degree = np.asarray(graph.sum(1)).ravel()
    if (degree == 0).any():  # images whose every neighbour is in another cluster: the part to cut off
        return degree == 0
    embedding = spectral_embedding(graph, 3, diffusion_time=1.0, seed=seed)[:, 1:]
    return fit_kmeans(embedding, 2, restarts=3, seed=seed)[0] == 1


def normalised_cut(graph: scipy.sparse.csr_matrix, labels: np.ndarray) -> float:
    """Shi and Malik's normalised cut of the partition ``labels``: over the clusters, the share of
    each one's edge weight (its volume) that leaves it. 0 for clusters the graph never links."""
    labels = np.asarray(labels)
    k = int(labels.max()) + 1
    return _cut(*_cluster_edges(graph.tocoo(), labels, k))


def _conductances(inside: np.ndarray, degree: np.ndarray) -> np.ndarray:
    """``(k, k)``: the edge weight between every two clusters over the smaller one's volume."""
    return inside / np.maximum(np.minimum(degree[:, None], degree[None, :]), 1e-12)


def _joined_cuts(inside: np.ndarray, degree: np.ndarray) -> np.ndarray:
    """``(k, k)``: the partition's normalised cut after clusters ``a`` and ``b`` are joined (its
    ``k - 1`` clusters' shares of edges leaving them), for every pair (the diagonal means nothing)."""
    kept = np.diag(inside) / degree.clip(min=1e-12)  # each cluster's share of its edges kept inside
    joined = ((np.diag(inside)[:, None] + np.diag(inside)[None, :] + 2 * inside)
              / np.maximum(degree[:, None] + degree[None, :], 1e-12))
    return (len(degree) - 1) - (kept.sum() - kept[:, None] - kept[None, :] + joined)


def _cut(inside: np.ndarray, degree: np.ndarray) -> float:
    return float(len(degree) - (np.diag(inside) / degree.clip(min=1e-12)).sum())


def _cluster_edges(coo, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(k, k)`` edge weight between clusters and ``(k,)`` their volumes (summed degrees)."""
    pairs = labels[coo.row] * k + labels[coo.col]
    inside = np.bincount(pairs, weights=coo.data, minlength=k * k).reshape(k, k)
    return inside, inside.sum(1)


def modularity(graph: scipy.sparse.csr_matrix, labels: np.ndarray) -> float:
    """Newman's modularity of the partition ``labels`` of ``graph``: the share of edges inside
    clusters minus the share expected if edges were drawn at random with the same degrees
    (``sum_c L_c / m - (d_c / 2m)^2``). Label-free, comparable across graphs: a partition that
    cuts a graph along its communities scores high, merging or splitting them scores lower."""
    labels = np.asarray(labels)
    coo = graph.tocoo()
    total = coo.data.sum()  # 2m: every undirected edge is stored twice
    k = int(labels.max()) + 1
    inside = np.bincount(labels[coo.row], weights=coo.data * (labels[coo.row] == labels[coo.col]), minlength=k)
    degree = np.bincount(labels, weights=np.asarray(graph.sum(1)).ravel(), minlength=k)
    return float((inside / total - (degree / total) ** 2).sum())
