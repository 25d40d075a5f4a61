"""graph.split_merge: the moves that lower the spectral clusters' normalised cut at the same
cluster count (``mcvae_framework.graph.spectral.split_and_merge``)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse

from mcvae_framework.graph.invariant_graph import describe_choice
from mcvae_framework.graph.spectral import bisection, normalised_cut, split_and_merge


def block_graph(sizes, links: dict, inside: float = 0.2, seed: int = 0) -> scipy.sparse.csr_matrix:
    """A symmetric 0/1 graph of blocks of ``sizes``: each pair within a block linked with
    probability ``inside``, the pairs of blocks ``(i, j)`` in ``links`` with their given probability."""
    rng = np.random.default_rng(seed)
    block = np.repeat(np.arange(len(sizes)), sizes)
    n = len(block)
    chance = np.full((len(sizes), len(sizes)), 0.0)
    np.fill_diagonal(chance, inside)
    for (i, j), p in links.items():
        chance[i, j] = chance[j, i] = p
    upper = np.triu(rng.random((n, n)) < chance[block][:, block], k=1)
    return scipy.sparse.csr_matrix((upper | upper.T).astype(float)), block


def agree(labels, truth) -> bool:
    """The same partition, whatever the cluster numbers."""
    pairs = set(zip(labels.tolist(), truth.tolist()))
    return len(pairs) == len(set(labels.tolist())) == len(set(truth.tolist()))


def test_the_largest_class_split_and_two_small_ones_joined_are_put_right():
    # class 0 (400 images) is two halves well linked to each other; classes 1 and 2 (80 each) barely linked
    graph, truth = block_graph([200, 200, 80, 80], {(0, 1): 0.08, (2, 3): 0.002})
    truth = np.array([0, 0, 1, 2])[truth]
    kmeans_like = np.repeat([0, 1, 2, 2], [200, 200, 80, 80])  # what k-means on the embedding gave
    labels, moves = split_and_merge(graph, kmeans_like, seed=0)
    assert moves == 1
    assert agree(labels, truth)
    assert normalised_cut(graph, labels) < normalised_cut(graph, kmeans_like)
    assert sorted(np.unique(labels).tolist()) == [0, 1, 2]  # still 0..K-1


def test_a_right_partition_is_left_alone():
    graph, truth = block_graph([150, 100, 60], {(0, 1): 0.005, (1, 2): 0.005})
    labels, moves = split_and_merge(graph, truth, seed=0)
    assert moves == 0 and np.array_equal(labels, truth)


def test_two_clusters_no_more_linked_than_a_split_would_cut_are_not_joined():
    # clusters 1 and 2 are about as linked to each other as the halves of cluster 0: joining them and
    # cutting cluster 0 lowers the normalised cut a little, but the graph gives no clear reason
    graph, block = block_graph([150, 150, 100, 100], {(0, 1): 0.03, (2, 3): 0.04})
    labels = np.array([0, 0, 1, 2])[block]
    _, moves = split_and_merge(graph, labels, seed=0)
    assert moves == 0


def test_no_sliver_is_cut_off_a_cluster():
    # cluster 0 holds 8 images linked only to cluster 1 (their normalised cut alone would be 0)
    graph, block = block_graph([300, 8, 300, 150, 150], {(1, 2): 0.3, (3, 4): 0.1})
    labels = np.array([0, 0, 1, 2, 2])[block]
    _, moves = split_and_merge(graph, labels, seed=0)
    assert moves == 0


def test_bisection_cuts_a_cluster_along_its_weakest_seam():
    graph, block = block_graph([120, 60], {(0, 1): 0.003})
    halves = bisection(graph, seed=0)
    assert agree(halves.astype(int), block)
    # images without a neighbour inside the cluster are the part cut off
    lonely = scipy.sparse.csr_matrix(scipy.sparse.block_diag([graph, scipy.sparse.csr_matrix((3, 3))]))
    assert bisection(lonely, seed=0).sum() == 3


def test_normalised_cut_counts_each_clusters_share_of_edges_leaving_it():
    # a path 0-1-2-3: clusters {0, 1} and {2, 3}; each has volume 3 (degrees 1 + 2), one edge leaves each
    path = scipy.sparse.csr_matrix(np.array([[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 1, 0]], dtype=float))
    assert normalised_cut(path, np.array([0, 0, 1, 1])) == pytest.approx(2 / 3)
    two_pieces = scipy.sparse.csr_matrix(np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], dtype=float))
    assert normalised_cut(two_pieces, np.array([0, 0, 1, 1])) == 0


def test_the_moves_are_in_the_graphs_log_line():
    info = {"neighbours": 8, "search_poses": 36, "downsample": 1, "features": "pixels", "blur_sigma": 0,
            "pca_dim": 43, "noise_floor": None, "pieces": 1, "pieces_bridged": 1, "cluster_sizes": [10, 10],
            "candidates": [{"features": "pixels", "blur_sigma": 0, "modularity": 0.79}],
            "split_merge_moves": 1, "normalised_cut": [0.1617, 0.0286]}
    assert "1 split-and-merge move(s) (graph.split_merge), normalised cut 0.162 -> 0.029" in describe_choice(info)
    assert "split-and-merge" not in describe_choice({**info, "split_merge_moves": 0})


def _embedding(graph, n_clusters):
    from mcvae_framework.graph.spectral import spectral_partition

    return spectral_partition(graph, n_clusters, embedding_dim=2 * n_clusters, seed=0)


def test_merged_partition_joins_the_pieces_of_each_class_back():
    # class 0 (400 images) is two halves well linked to each other; classes 1 and 2 (80 each) barely linked
    from mcvae_framework.graph.spectral import merged_partition

    graph, block = block_graph([200, 200, 80, 80], {(0, 1): 0.08, (2, 3): 0.002})
    truth = np.array([0, 0, 1, 2])[block]
    _, _, embedding = _embedding(graph, 3)
    labels = merged_partition(graph, embedding, 3, seed=0)
    assert agree(labels, truth)
    assert sorted(np.unique(labels).tolist()) == [0, 1, 2]
    assert normalised_cut(graph, labels) == pytest.approx(normalised_cut(graph, truth))


def test_partition_merge_is_chosen_by_the_graph_settings_and_logged():
    from mcvae_framework.config.sections import GraphConfig
    from mcvae_framework.graph.spectral import describe_moves, refined_partition

    graph, block = block_graph([200, 200, 80, 80], {(0, 1): 0.08, (2, 3): 0.002})
    truth = np.array([0, 0, 1, 2])[block]
    wrong = np.repeat([0, 1, 2, 2], [200, 200, 80, 80])  # the largest class halved, two small ones joined
    _, distance, embedding = _embedding(graph, 3)
    settings = GraphConfig(split_merge=False)
    merged, merged_distance, info = refined_partition(graph, wrong, distance, embedding,
                                                      settings.model_copy(update={"partition": "merge"}), seed=0)
    assert agree(merged, truth) and info["partition"] == "merge" and merged_distance.shape == distance.shape
    # numbered as the k-means clusters they share most with: one half of the large class and one small class move
    assert info["merge_moved_images"] == 280 and sorted(set(merged.tolist())) == [0, 1, 2]
    assert "graph.partition: merge" in describe_moves(info) and "280 image(s) moved" in describe_moves(info)
    # after the split-and-merge move has put it right, the joins find the same partition: nothing moves
    moved, _, info = refined_partition(graph, wrong, distance, embedding, GraphConfig(partition="merge"), seed=0)
    assert agree(moved, truth) and info["split_merge_moves"] == 1 and info["merge_moved_images"] == 0
    kept, _, info = refined_partition(graph, wrong, distance, embedding, settings, seed=0)
    assert kept is wrong and "partition" not in info  # the default: k-means
    kept, kept_distance, info = refined_partition(graph, wrong, distance, embedding,
                                                  GraphConfig(partition="merge", balanced=True), seed=0)
    assert kept is wrong and kept_distance is distance and info == {}
    # the same partition as k-means: its labels and distances kept as they are
    same, same_distance, info = refined_partition(graph, truth, distance, embedding,
                                                  GraphConfig(partition="merge"), seed=0)
    assert np.array_equal(same, truth) and same_distance is distance and info["merge_moved_images"] == 0
    with pytest.raises(ValueError, match="partition"):
        GraphConfig(partition="agglomerative")
