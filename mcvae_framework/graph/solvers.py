"""The invariant graph's two numerical steps past its neighbour lists, chosen by size.

* :func:`leading_eigenvectors`: the leading eigenvectors of the graph's normalised
  adjacency. Up to :data:`LOBPCG_ABOVE` nodes ARPACK's Lanczos (:func:`scipy.sparse.linalg.eigsh`)
  as always; above, where Lanczos needs ever more restarts (the cluster-level eigenvalues
  crowd near 1 as the graph grows), LOBPCG preconditioned by an algebraic multigrid of the
  graph Laplacian (pyamg's smoothed aggregation, as scikit-learn's ``eigen_solver="amg"``
  does), whose cost grows about linearly with the nodes. Without pyamg, LOBPCG runs
  unpreconditioned.
* :func:`fit_kmeans`: scikit-learn's ``KMeans`` up to :data:`MINIBATCH_ABOVE` rows,
  ``MiniBatchKMeans`` above (each step reads a batch, not every row).
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
from sklearn.cluster import KMeans, MiniBatchKMeans

log = logging.getLogger("mcvae_framework.graph.solvers")

#: nodes above which the spectral embedding uses LOBPCG with a multigrid preconditioner.
LOBPCG_ABOVE = 50_000
#: rows above which k-means is mini-batch k-means.
MINIBATCH_ABOVE = 100_000
#: rows per mini-batch k-means step.
MINIBATCH_SIZE = 4096


def solver_choices(n: int) -> dict:
    """Which eigensolver and which k-means :func:`leading_eigenvectors` and :func:`fit_kmeans`
    use for ``n`` images (for the graph's log and its ``info``)."""
    return {"eigensolver": "arpack" if n <= LOBPCG_ABOVE else "lobpcg+amg",
            "kmeans": "k-means" if n <= MINIBATCH_ABOVE else f"mini-batch k-means (batches of {MINIBATCH_SIZE})"}


def leading_eigenvectors(normalised: scipy.sparse.spmatrix, dim: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``dim`` largest eigenvalues of the symmetric ``normalised`` adjacency
    ``D^-1/2 A D^-1/2`` and their eigenvectors, largest first.

    :returns: ``(values (dim,), vectors (N, dim))``.
    """
    n = normalised.shape[0]
    if n <= LOBPCG_ABOVE:
        start = np.random.default_rng(seed).random(n)
        values, vectors = scipy.sparse.linalg.eigsh(normalised, k=dim, which="LA", v0=start)
    else:
        values, vectors = _lobpcg(normalised, dim, seed)
    order = np.argsort(-values)
    return values[order], vectors[:, order]


def _lobpcg(normalised, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Smallest eigenpairs of the Laplacian ``I - normalised`` by LOBPCG (eigenvalues of the
    adjacency ``1 - lambda``)."""
    n = normalised.shape[0]
    identity = scipy.sparse.identity(n, format="csr")
    laplacian = (identity - normalised).tocsr()
    preconditioner = None
    try:
        from pyamg import smoothed_aggregation_solver
    except ImportError:
        log.warning("pyamg is not installed: the spectral embedding of %d images runs LOBPCG without a "
                    "preconditioner, which may converge slowly (pip install pyamg)", n)
    else:
        # the Laplacian is singular (constant vectors of each component): a tiny shift makes the
        # multigrid hierarchy well defined without moving the eigenvectors
        hierarchy = smoothed_aggregation_solver((laplacian + 1e-5 * identity).tocsr())
        preconditioner = hierarchy.aspreconditioner()
    rng = np.random.default_rng(seed)
    start = rng.standard_normal((n, dim + 1))
    start[:, 0] = np.sqrt(np.asarray(normalised.sum(1)).ravel())  # near the leading eigenvector
    values, vectors = scipy.sparse.linalg.lobpcg(laplacian, start, M=preconditioner, tol=1e-5, maxiter=400,
                                                 largest=False)
    order = np.argsort(values)[:dim]
    return 1.0 - values[order], vectors[:, order]


def fit_kmeans(rows: np.ndarray, n_clusters: int, *, restarts: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """k-means of ``rows`` (see the module doc for the choice of algorithm).

    :returns: ``(labels (N,), centres (K, D))``.
    """
    if len(rows) <= MINIBATCH_ABOVE:
        model = KMeans(n_clusters=n_clusters, n_init=restarts, random_state=seed)
    else:
        model = MiniBatchKMeans(n_clusters=n_clusters, n_init=restarts, random_state=seed, batch_size=MINIBATCH_SIZE)
    model.fit(rows)
    return model.labels_, model.cluster_centers_


__all__ = ["LOBPCG_ABOVE", "MINIBATCH_ABOVE", "fit_kmeans", "leading_eigenvectors", "solver_choices"]
