"""Synchronisation of orthogonal poses over the invariant graph's neighbour pairs.

For a group whose elements have an orthogonal part (``orthogonal_dim = d > 0``: rotations
of volumes, rotations and reflections of the plane), the best search move of every
neighbour pair, ``x_i ~ s_ij . x_j``, gives a relative orthogonal matrix
``B_ij = orthogonal_part(s_ij)``. If ``x_i = T_i . x_0`` within a cluster, then
``B_ij = T_i T_j^T``: the ``dN x dN`` matrix of these blocks is ``T T^T`` (``T`` the
blocks ``T_i`` stacked), and its ``d`` leading eigenvectors give every ``T_i`` up to one
orthogonal matrix per cluster -- the spectral synchronisation of Singer (2011) and
Singer & Shkolnisky (2011), here for ``O(d)`` or ``SO(d)`` blocks. With ``d = 2`` and
rotations only it is the angular synchronisation of :func:`synchronise_angles`; the blocks
also carry reflections (``O(2)``) and rotations of space (``SO(3)``).

Synchronised poses are trusted per image (:func:`pose_trust`): an image whose neighbours'
relative poses agree with the synchronised ones has a pose the pose head can learn; in a
cluster of symmetric shapes (an ellipse looks the same after half a turn, so its relative
angles are right only up to that turn) they do not, and the poses there are noise. Five
filled shapes over the full circle (the unseen benchmark's development family, seed 1):
the arrow's cluster trusts its poses at 1.000 (mean over its images), the triangle's 0.985,
the star's 0.891, the plus's 0.596, the ellipse's 0.497; the quickstart's ten digit clusters
0.963-1.000. A diagnostic: weighing the pose guidance by it moved no
worst case (docs/concepts.md, *Pose trust*).
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


def synchronise_angles(neighbours: torch.Tensor, relative: torch.Tensor, labels: np.ndarray,
                       centre: float = 0.0, seed: int = 0) -> torch.Tensor:
    """Every image's rotation angle, from the neighbours' relative rotations, per cluster.

    Angular synchronisation (Singer 2011): within each cluster, the leading eigenvector of
    the Hermitian matrix ``H_ij = exp(i r_ij)`` over its neighbour pairs gives angles
    ``theta_i`` with ``theta_i - theta_j ~ r_ij``. Such angles are defined up to one offset
    per cluster, chosen here so that the cluster's circular mean angle is ``centre`` (the
    middle of the pose range, where a uniform pose distribution centres).

    :returns: ``(N,)`` angles in ``(-pi, pi]``.
    """
    n, k = neighbours.shape
    rows = np.repeat(np.arange(n), k)
    cols = neighbours.numpy().ravel()
    phases = np.exp(1j * relative.double().numpy().ravel())
    angles = np.zeros(n)
    rng = np.random.default_rng(seed)
    for cluster in np.unique(labels):
        members = np.flatnonzero(labels == cluster)
        position = np.full(n, -1)
        position[members] = np.arange(len(members))
        inside = (position[rows] >= 0) & (position[cols] >= 0)
        i, j, w = position[rows[inside]], position[cols[inside]], phases[inside]
        size = len(members)
        matrix = scipy.sparse.csr_matrix((np.concatenate([w, w.conj()]), (np.concatenate([i, j]),
                                          np.concatenate([j, i]))), shape=(size, size))
        if size < 3 or matrix.nnz == 0:
            continue
        start = rng.random(size) + 1j * rng.random(size)
        _, vector = scipy.sparse.linalg.eigsh(matrix, k=1, which="LA", v0=start)
        phase = vector[:, 0] / np.abs(vector[:, 0]).clip(min=1e-12)
        phase *= np.exp(1j * centre) / (phase.mean() / max(abs(phase.mean()), 1e-12))
        angles[members] = np.angle(phase)
    return torch.as_tensor(angles, dtype=torch.float32)


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


def synchronise(neighbours: torch.Tensor, relative: torch.Tensor | None, relative_moves: torch.Tensor | None,
                labels: np.ndarray, group, *, centre: float, seed: int):
    """``(angles, poses, trust)`` of the graph: synchronised angles from the neighbours'
    ``relative`` angles, or synchronised orthogonal ``poses`` from their ``relative_moves``
    (whichever is given; the other is ``None``), and every image's :func:`pose_trust`."""
    angles = poses = trust = None
    if relative is not None:
        angles = synchronise_angles(neighbours, relative, labels, centre=centre, seed=seed)
        trust = pose_trust(neighbours, labels, torch.cos(relative - (angles[:, None] - angles[neighbours])))
    elif relative_moves is not None:
        poses = synchronise_orthogonal(neighbours, relative_moves, labels, seed=seed,
                                       special=int(getattr(group, "n_components", 1)) == 1)
        trust = pose_trust(neighbours, labels, rotation_cosine(
            relative_moves.transpose(-1, -2) @ (poses[:, None] @ poses[neighbours].transpose(-1, -2))))
    return angles, poses, trust


def rotation_cosine(residual: torch.Tensor) -> torch.Tensor:
    """``(..., d, d)`` orthogonal residuals -> the cosine of their turn, ``(trace - (d - 2)) / 2``:
    1 for the identity, ``cos a`` for a turn by ``a`` in one plane, and at most 0 for a residual
    reflection in the plane (``O(2)``: the wrong mirror image)."""
    d = residual.shape[-1]
    return (residual.diagonal(dim1=-2, dim2=-1).sum(-1) - (d - 2)) / 2


def pose_trust(neighbours: torch.Tensor, labels, agreement: torch.Tensor) -> torch.Tensor:
    """``(N,)`` in ``[0, 1]``: every image's mean ``agreement`` (the cosine of the residual between a
    neighbour's relative pose and the synchronised ones, ``(N, k)``) over its neighbours in its
    own cluster, clipped at 0; 0 for an image with no neighbour in its cluster."""
    labels = torch.as_tensor(np.asarray(labels))
    same = (labels[neighbours] == labels[:, None]).to(agreement.dtype)
    mean = (agreement * same).sum(1) / same.sum(1).clamp_min(1)
    return mean.clamp(0, 1).to(torch.float32)


def pose_trust_info(trust: torch.Tensor | None, labels, n_clusters: int) -> dict:
    """For ``train.log`` and ``report.json``: every graph cluster's mean pose trust."""
    if trust is None:
        return {}
    labels = torch.as_tensor(np.asarray(labels))
    return {"pose_trust": [round(float(trust[labels == c].mean()), 3) if bool((labels == c).any()) else None
                           for c in range(n_clusters)]}
