"""Synchronisation of orthogonal poses over the invariant graph's neighbour pairs.

For a group whose elements have an orthogonal part (``orthogonal_dim = d > 0``: rotations
of volumes, rotations and reflections of the plane), the best search move of every
neighbour pair, ``x_i ~ s_ij . x_j``, gives a relative orthogonal matrix
``B_ij = orthogonal_part(s_ij)``. If ``x_i = T_i . x_0`` within a cluster, then
``B_ij = T_i T_j^T``: the ``dN x dN`` matrix of these blocks is ``T T^T`` (``T`` the
blocks ``T_i`` stacked), and its ``d`` leading eigenvectors give every ``T_i`` up to one
orthogonal matrix per cluster -- the spectral synchronisation of Singer (2011) and
Singer & Shkolnisky (2011), here for ``O(d)`` or ``SO(d)`` blocks. With ``d = 2`` and
rotations only it is the angular synchronisation of
:func:`~mcvae_framework.graph.invariant_graph.synchronise_angles`; the blocks also carry
reflections (``O(2)``) and rotations of space (``SO(3)``).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch


def synchronises_orthogonally(group) -> bool:
    """Whether the graph synchronises the group's orthogonal parts (``GraphClusters.poses``)
    rather than its first angle: a group with an orthogonal part and either a discrete part
    or no angle coordinate (a rotation of volumes)."""
    if int(getattr(group, "orthogonal_dim", 0) or 0) <= 0:
        return False
    return int(getattr(group, "n_components", 1)) > 1 or not list(group.angle_coordinates)


def best_moves(reference: torch.Tensor, moved: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
    """``(N, k)`` index of the search move ``s`` with ``x_i ~ s . x_j`` for every neighbour
    ``j`` of ``i``: the one of highest similarity (a chunk of rows at a time)."""
    best = []
    for start in range(0, len(reference), 256):
        rows = reference[start:start + 256]
        similarity = torch.einsum("nd,mnkd->nkm", rows, moved[:, neighbours[start:start + 256]])
        best.append(similarity.argmax(-1))
    return torch.cat(best)


def project_blocks(blocks: np.ndarray, special: bool) -> np.ndarray:
    """``(n, d, d)`` -> the nearest orthogonal matrices (``special``: of determinant +1)."""
    u, _, vh = np.linalg.svd(blocks)
    if special:
        sign = np.sign(np.linalg.det(u @ vh))
        u[..., -1] *= sign[:, None]
    return u @ vh


def synchronise_orthogonal(neighbours: torch.Tensor, relative: torch.Tensor, labels: np.ndarray, *,
                           special: bool, seed: int = 0) -> torch.Tensor:
    """Every image's orthogonal pose ``T_i`` from its neighbours' relative ones, per cluster.

    :param neighbours: ``(N, k)`` neighbour indices.
    :param relative: ``(N, k, d, d)`` orthogonal ``B_ij`` with ``x_i ~ B_ij . x_j``.
    :param labels: ``(N,)`` clusters; each is synchronised on its own.
    :param special: rotations only (``SO(d)``); else reflections too (``O(d)``).
    :returns: ``(N, d, d)`` float32 with ``T_i T_j^T ~ B_ij`` within a cluster (the identity
        for images of clusters too small to synchronise).
    """
    n, k = neighbours.shape
    d = relative.shape[-1]
    rows = np.repeat(np.arange(n), k)
    cols = neighbours.numpy().ravel()
    blocks = relative.double().numpy().reshape(n * k, d, d)
    poses = np.tile(np.eye(d), (n, 1, 1))
    rng = np.random.default_rng(seed)
    a, b = np.meshgrid(np.arange(d), np.arange(d), indexing="ij")
    for cluster in np.unique(labels):
        members = np.flatnonzero(labels == cluster)
        position = np.full(n, -1)
        position[members] = np.arange(len(members))
        inside = (position[rows] >= 0) & (position[cols] >= 0)
        size = len(members)
        if size < 3 or not inside.any():
            continue
        i, j, w = position[rows[inside]], position[cols[inside]], blocks[inside]
        # entry (i d + a, j d + b) = B_ij[a, b], and its transpose at (j, i)
        r = (i[:, None, None] * d + a).ravel()
        c = (j[:, None, None] * d + b).ravel()
        values = w.ravel()
        matrix = scipy.sparse.csr_matrix((np.concatenate([values, values]), (np.concatenate([r, c]),
                                          np.concatenate([c, r]))), shape=(size * d, size * d))
        _, vectors = scipy.sparse.linalg.eigsh(matrix, k=d, which="LA", v0=rng.random(size * d))
        estimate = vectors.reshape(size, d, d)
        if special and np.mean(np.linalg.det(estimate) < 0) > 0.5:
            estimate[..., -1] *= -1  # the eigenvectors' sign is arbitrary: pick the rotations
        poses[members] = project_blocks(estimate, special)
    return torch.as_tensor(poses, dtype=torch.float32)
