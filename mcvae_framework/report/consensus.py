"""The model's clusters read with its invariant graph, for the images that are the graph's nodes.

A model scores each image alone. Under heavy noise (cryo-EM particles at SNR 0.05) one image
says less than its neighbourhood does: the graph, which votes over neighbours, can then be
right where the model is not. Where the scored images are nodes of the run's graph (the
training split, or the test split of a ``training.transductive`` run, whose graph holds
the test images after the training ones), the report gives two more readings beside the
model's own ``accuracy`` (what it gives an image the graph never saw):

* ``consensus`` (:func:`neighbour_consensus`): the model's responsibilities of every image
  averaged with those of its ``k`` graph neighbours (each weighted ``1/(k+1)``). On the
  SNR-0.1 development stack (5,000 particles, seed 0) the model alone scored 0.985 on the
  test split, its graph 1.000, the consensus 1.000. It can also pull a right answer of the
  model's to a wrong neighbourhood: development digits seed 2, 0.883 alone, 0.877 so read;
* ``settled`` (:func:`settled_clusters`): the model's clusters, except for the graph's
  *unanimous* images (every neighbour in the image's own graph cluster), which keep their
  graph cluster. On the development stacks at SNR 0.05 every such image the model moved
  elsewhere, 8 of 8, was one the graph had right (particles_64: 6, particles_views: 2), while
  most images the model moved out of a split neighbourhood it had right; the reading moves
  only the former (every image: particles_64 0.9966 -> 0.9978, graph 0.9968; particles_views
  0.9869 -> 0.9875, graph 0.9862; digits and outlines, unchanged).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ..config.components import build
from ..runtime.data import dataset_tensors
from .inference import cluster_probabilities


def neighbour_consensus(probabilities: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
    """``(N, K)``: the mean of every row of ``probabilities`` and its neighbours' rows.

    :param probabilities: ``(N, K)`` cluster probabilities of the graph's ``N`` images.
    :param neighbours: ``(N, k)`` positions of every image's graph neighbours.
    """
    if neighbours.shape[0] != probabilities.shape[0]:
        raise ValueError(f"neighbour consensus: {probabilities.shape[0]} rows of probabilities for a graph of "
                         f"{neighbours.shape[0]} images")
    return (probabilities + probabilities[neighbours].sum(1)) / (neighbours.shape[1] + 1)


def graph_sources(config, split: str, dataset, n_graph: int) -> tuple[list, int] | None:
    """The datasets whose images, in order, are the graph's nodes (``dataset``, the split being
    scored, among them), and the position of ``dataset`` in that list; ``None`` when the graph
    does not hold the split's images."""
    if config.training.transductive:
        other = build("data", config.data, split="test" if split == "train" else "train")
        sources, position = ([dataset, other], 0) if split == "train" else ([other, dataset], 1)
    elif split == "train":
        sources, position = [dataset], 0
    else:
        return None
    if sum(len(source) for source in sources) != n_graph:
        return None  # the data changed since training: the graph's positions no longer apply
    return sources, position


def unanimous(labels: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: images whose every graph neighbour shares their cluster."""
    labels = np.asarray(labels)
    return (labels[np.asarray(neighbours)] == labels[:, None]).all(axis=1)


def settled_clusters(clusters: np.ndarray, graph_labels: np.ndarray, neighbours: np.ndarray,
                     n_clusters: int) -> np.ndarray:
    """``(N,)``: the model's ``clusters`` of the graph's ``N`` images, with every unanimous image
    (:func:`unanimous`) put in the model's cluster matched to its graph cluster (the best
    one-to-one matching of the model's clusters to the graph's over all ``N`` images).

    :param clusters: ``(N,)`` the model's clusters, ``0..n_clusters-1``.
    :param graph_labels: ``(N,)`` the graph's clusters.
    :param neighbours: ``(N, k)`` positions of every image's graph neighbours.
    """
    clusters, graph_labels = np.asarray(clusters), np.asarray(graph_labels)
    if len(clusters) != len(graph_labels) or len(neighbours) != len(graph_labels):
        raise ValueError(f"settled clusters: {len(clusters)} model clusters, {len(graph_labels)} graph labels and "
                         f"{len(neighbours)} neighbour lists must be of the same images")
    counts = np.zeros((n_clusters, n_clusters))
    np.add.at(counts, (clusters, graph_labels), 1)
    mine, theirs = linear_sum_assignment(-counts)
    model_cluster_of = np.empty(n_clusters, dtype=clusters.dtype)
    model_cluster_of[theirs] = mine
    core = unanimous(graph_labels, neighbours)
    settled = clusters.copy()
    settled[core] = model_cluster_of[graph_labels[core]]
    return settled


def graph_readings(model, config, graph: dict | None, split: str, dataset, *, batch_size: int = 256) -> dict | None:
    """``{"consensus": ..., "settled": ...}``: each reading's accuracy, NMI, ARI and cluster sizes
    on ``dataset``, the run's ``split`` (the sizes alone when it has no labels), and how many of
    its images the reading moves from the model's own cluster; ``None`` for a run without a
    graph (``graph``: the checkpoint's), or a split the graph does not hold."""
    from .evaluation import clustering_metrics  # evaluation imports this module

    if graph is None:
        return None
    neighbours = graph["neighbours"].long()
    found = graph_sources(config, split, dataset, len(neighbours))
    if found is None:
        return None
    sources, position = found
    parts = [dataset_tensors(source, keys=("image", "label") if i == position else ("image",))
             for i, source in enumerate(sources)]
    start = sum(len(source) for source in sources[:position])
    rows = slice(start, start + len(sources[position]))
    probabilities = cluster_probabilities(model, torch.cat([part["image"] for part in parts]),
                                          batch_size=batch_size).float()
    k = int(probabilities.shape[1])
    own = probabilities.argmax(1).numpy()
    readings = {
        "consensus": neighbour_consensus(probabilities, neighbours).argmax(1).numpy(),
        "settled": settled_clusters(own, graph["labels"].numpy(), neighbours.numpy(), k),
    }
    labels = parts[position].get("label")
    out = {}
    for name, clusters in readings.items():
        clusters = clusters[rows]
        reading = {"neighbours": int(neighbours.shape[1]), "moved_images": int((clusters != own[rows]).sum())}
        if name == "settled":
            reading["unanimous_images"] = int(unanimous(graph["labels"].numpy(), neighbours.numpy())[rows].sum())
        if labels is not None:
            reading.update({key: value for key, value in
                            clustering_metrics(labels.numpy(), clusters, n_clusters=k).items()
                            if key in ("accuracy", "nmi", "ari", "cluster_sizes")})
        else:
            reading["cluster_sizes"] = np.bincount(clusters, minlength=k).tolist()
        out[name] = reading
    return out


__all__ = ["graph_readings", "graph_sources", "neighbour_consensus", "settled_clusters", "unanimous"]
