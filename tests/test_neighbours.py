"""The invariant graph at scale: approximate against exact neighbours, images read in chunks,
and the solvers the graph switches to for large sets (graph/neighbours.py, chunks.py, solvers.py)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import scipy.sparse
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import adjusted_rand_score

from mcvae_framework import build
from mcvae_framework.graph import neighbours as nb
from mcvae_framework.graph import solvers
from mcvae_framework.graph.chunks import ImageChunks
from mcvae_framework.graph.invariant_graph import fit_projection, invariant_graph_clusters, moved_features
from mcvae_framework.graph.spectral import symmetric_graph

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def digit_features(n: int = 1200, pca_dim: int = 16):
    """Reference and moved features of ``n`` scikit-learn digits, rotated, as the graph makes them."""
    digits = load_digits()
    images = torch.as_tensor(digits.images[:n] / 16.0, dtype=torch.float32)[:, None]
    group = build("group", {"type": "so2", "angle_deg": [-90, 90]})
    angles = torch.linspace(-1.5, 1.5, n)[torch.randperm(n, generator=torch.Generator().manual_seed(0))]
    images = group.act(images, group.exp(angles[:, None]))
    poses = group.search_poses(7).float()
    with torch.no_grad():
        project = fit_projection(images, group, poses, pca_dim, seed=0)
        reference, moved = moved_features(images, group, poses, project=project)
    return images, group, reference, moved, digits.target[:n]


def recall(found: torch.Tensor, exact: torch.Tensor) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found.tolist(), exact.tolist())]))


@pytest.fixture(scope="module")
def features():
    return digit_features()


def test_approximate_and_exact_neighbours_agree_on_small_data(features):
    pytest.importorskip("faiss")
    _, _, reference, moved, _ = features
    exact, exact_values = nb.exact_neighbours(reference, moved, 8)
    found, values = nb.approximate_neighbours(reference, moved, 8)
    assert found.shape == exact.shape and values.dtype == torch.float32
    assert recall(found, exact) >= 0.95
    assert not (found == torch.arange(len(found))[:, None]).any(), "an image is never its own neighbour"
    assert all(len(set(row)) == len(row) for row in found.tolist()), "a neighbour is listed once"
    # a similarity found is the exact best cosine over the poses for that pair
    pairs = torch.stack([torch.einsum("d,mkd->mk", reference[i], moved[:, found[i]]).amax(0) for i in range(20)])
    assert torch.allclose(pairs, values[:20], atol=1e-5)
    assert (values[:, :-1] >= values[:, 1:]).all(), "best first"


def test_an_index_probing_every_cell_finds_exactly_the_exact_lists(features):
    pytest.importorskip("faiss")
    _, _, reference, moved, _ = features
    exact, exact_values = nb.exact_neighbours(reference, moved, 8)
    cells = nb.ivf_cells(moved.shape[0] * moved.shape[1])
    found, values = nb.approximate_neighbours(reference, moved, 8, nprobe=cells)
    assert torch.allclose(values, exact_values, atol=1e-5)
    assert recall(found, exact) > 0.995  # ties between equal similarities may order differently


def test_pynndescent_is_the_fallback_without_faiss(features, monkeypatch):
    pytest.importorskip("pynndescent")
    _, _, reference, moved, _ = features
    monkeypatch.setattr(nb, "_has_faiss", lambda: False)
    settings = {}
    found, _ = nb.approximate_neighbours(reference, moved, 8, settings=settings)
    assert settings["backend"] == "pynndescent"
    assert recall(found, nb.exact_neighbours(reference, moved, 8)[0]) >= 0.9


def test_without_any_backend_the_approximate_search_says_what_to_install(features, monkeypatch):
    import builtins

    _, _, reference, moved, _ = features
    real_import = builtins.__import__

    def no_backends(name, *args, **kwargs):
        if name in ("faiss", "pynndescent"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_backends)
    with pytest.raises(ImportError, match="faiss-cpu.*pynndescent.*neighbour_search: exact"):
        nb.approximate_neighbours(reference, moved, 8)


def test_auto_switches_to_the_approximate_search_above_its_threshold_and_logs_it(features, caplog):
    pytest.importorskip("faiss")
    _, _, reference, moved, _ = features
    caplog.set_level(logging.INFO, logger="mcvae_framework.graph.neighbours")
    info = {}
    nb.neighbour_search(reference, moved, 5, method="auto", approximate_above=len(reference), info=info)
    assert info["neighbour_search"] == "exact"
    nb.neighbour_search(reference, moved, 5, method="auto", approximate_above=len(reference) - 1, info=info)
    assert info["neighbour_search"] == "approximate" and info["backend"].startswith("faiss IVF")
    assert "approximate (method=auto, 1,200 images > 1,199)" in caplog.text
    with pytest.raises(ValueError, match="unknown method 'nearest'"):
        nb.neighbour_search(reference, moved, 5, method="nearest")


def test_best_distinct_keeps_each_image_once_with_its_best_similarity_never_the_row_itself():
    candidates = np.array([[0, 3, 3, 2, 5, 2], [1, 1, 4, 0, 2, 2]])
    similarity = np.array([[1.0, 0.9, 0.95, 0.5, 0.7, 0.6], [1.0, 0.99, 0.2, 0.8, 0.1, 0.3]], dtype=np.float32)
    invalid = np.array([[False] * 5 + [True], [False] * 6])
    index, values = nb.best_distinct(candidates, similarity, 3, invalid=invalid)
    assert index.tolist() == [[3, 5, 2], [0, 2, 4]]
    assert torch.allclose(values, torch.tensor([[0.95, 0.7, 0.5], [0.8, 0.3, 0.2]]))
    shifted, _ = nb.best_distinct(candidates, similarity, 3, invalid=invalid, first_row=2)
    assert shifted[0].tolist() == [0, 3, 5], "row 0 of a chunk starting at image 2 is image 2"
    _, short = nb.best_distinct(candidates, similarity, 4, invalid=invalid)
    assert torch.isinf(short[:, 3]).all() and torch.isfinite(short[:, :3]).all(), "each row names three images"


def test_an_image_whose_candidates_name_too_few_images_gets_its_exact_list(features, monkeypatch):
    pytest.importorskip("faiss")
    _, _, reference, moved, _ = features
    monkeypatch.setattr(nb, "OVERSAMPLE", 0)  # as many candidates as poses: mostly the image's own copies
    settings = {}
    found, values = nb.approximate_neighbours(reference, moved, 8, settings=settings)
    exact, exact_values = nb.exact_neighbours(reference, moved, 8)
    assert settings["exact_rows"] > 0 and torch.isfinite(values).all()
    short = torch.as_tensor([i for i in range(len(found)) if torch.equal(values[i], exact_values[i])])
    assert len(short) >= settings["exact_rows"]


def test_the_graph_of_images_read_in_chunks_equals_the_graph_of_the_tensor(features):
    images, group = features[0], features[1]
    reads = []

    def read(positions):
        reads.append(len(positions))
        return images[torch.as_tensor(positions)]

    chunks = ImageChunks(read, len(images), images.shape[1:])
    options = dict(neighbours=6, pca_dim=12, search_size=7, kmeans_restarts=3, seed=1)
    whole = invariant_graph_clusters(images, group, 4, **options)
    streamed = invariant_graph_clusters(chunks, group, 4, chunk_size=64, **options)
    assert torch.equal(whole.labels, streamed.labels) and torch.equal(whole.neighbours, streamed.neighbours)
    # one image (its size), the projection's sample (at most 2,000), then chunks of 1,024 in order
    assert reads[-2:] == [1024, len(images) - 1024], "read a chunk at a time, never all at once"
    assert chunks[5].shape == images[5].shape and torch.equal(chunks[3:7], images[3:7])


def test_an_approximate_graph_clusters_as_the_exact_one(features):
    pytest.importorskip("faiss")
    images, group, _, _, labels = features
    options = dict(neighbours=8, pca_dim=16, search_size=7, kmeans_restarts=5, seed=0)
    exact = invariant_graph_clusters(images, group, 10, neighbour_search="exact", **options)
    approximate = invariant_graph_clusters(images, group, 10, neighbour_search="approximate", **options)
    assert exact.info["neighbour_search"] == "exact" and approximate.info["neighbour_search"] == "approximate"
    assert adjusted_rand_score(exact.labels, approximate.labels) > 0.9


def knn_graph(n_per_cluster: int = 150, clusters: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    points = np.concatenate([rng.normal(4 * c, 0.5, size=(n_per_cluster, 2)) for c in range(clusters)])
    distances = ((points[:, None] - points[None]) ** 2).sum(-1)
    np.fill_diagonal(distances, np.inf)
    neighbours = torch.as_tensor(np.argsort(distances, axis=1)[:, :8])
    graph = symmetric_graph(neighbours.numpy())
    scale = scipy.sparse.diags(1.0 / np.sqrt(np.asarray(graph.sum(1)).ravel()))
    return (scale @ graph @ scale).tocsr(), np.repeat(np.arange(clusters), n_per_cluster), points


def test_lobpcg_with_multigrid_finds_the_eigenvectors_arpack_finds(monkeypatch):
    normalised, _, _ = knn_graph()
    arpack_values, arpack_vectors = solvers.leading_eigenvectors(normalised, 5, seed=0)
    monkeypatch.setattr(solvers, "LOBPCG_ABOVE", 10)
    assert solvers.solver_choices(normalised.shape[0])["eigensolver"] == "lobpcg+amg"
    values, vectors = solvers.leading_eigenvectors(normalised, 5, seed=0)
    assert np.allclose(values, arpack_values, atol=1e-4)
    assert (values[:-1] >= values[1:]).all()
    # the same subspace (eigenvectors of repeated eigenvalues may rotate within it)
    overlap = np.linalg.svd(arpack_vectors.T @ vectors, compute_uv=False)
    assert overlap.min() > 0.99


def test_mini_batch_kmeans_above_its_size_finds_separated_clusters(monkeypatch):
    _, truth, points = knn_graph()
    monkeypatch.setattr(solvers, "MINIBATCH_ABOVE", 10)
    assert solvers.solver_choices(len(points))["kmeans"].startswith("mini-batch")
    labels, centres = solvers.fit_kmeans(points, 3, restarts=3, seed=0)
    assert adjusted_rand_score(truth, labels) == 1.0 and centres.shape == (3, 2)
