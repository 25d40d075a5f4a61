"""The model's clusters read with its invariant graph: every image's cluster probabilities
averaged with those of its graph neighbours.

A model scores each image alone. Under heavy noise (cryo-EM particles at SNR 0.1) one image
says less than its neighbourhood does: the graph, which votes over neighbours, can then be
right where the model is not. Where the scored images are nodes of the run's graph (the
training split, or the test split of a ``training.transductive`` run, whose graph holds
the test images after the training ones), :func:`neighbour_consensus` averages the model's
responsibilities of every image and its ``k`` graph neighbours (each weighted ``1/(k+1)``),
and the report gives both readings: ``accuracy`` (the model alone, as for an image the
graph never saw) and ``consensus.accuracy``.

On the SNR-0.1 development stack (5,000 particles, seed 0), the model alone scored 0.985 on
the test split, its graph 1.000, the consensus of the model's probabilities 1.000.
"""

from __future__ import annotations

import numpy as np
import torch

from ..config.components import build
from ..errors import DataError
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


def consensus_of_images(model, config, graph: dict | None, dataset, *, where: str, batch_size: int = 256,
                        images: torch.Tensor | None = None, probabilities: torch.Tensor | None = None) -> torch.Tensor:
    """``(N, K)``: the neighbour consensus of the images of ``dataset``, which must be nodes of the
    run's graph (its training images, and its test images after a ``training.transductive``
    run), for ``mcvae predict --with-graph``. An image is found by its split and its position in
    the source, then checked pixel for pixel.

    :param graph: the run's checkpoint's ``graph``.
    :param dataset: the images predicted: one split, or every image of the run's data.
    :param where: the images' origin for the messages (``--data FILE``).
    :param images: ``dataset``'s images, stacked, where the caller read them already (else read here).
    :param probabilities: their cluster probabilities, where the caller's model pass gave them:
        the model then scores only the graph's other nodes (``mcvae predict`` runs it once per image).
    :raises DataError: the run has no graph, or an image is not one of its nodes (another file, a
        test image of a run that was not transductive, data changed since training).
    """
    if graph is None:
        raise DataError(f"{where}: --with-graph reads the run's invariant graph, and this run trained without one "
                        "(graph.enabled: false); predict without --with-graph")
    neighbours = graph["neighbours"].long()
    found = graph_sources(config, "train", build("data", config.data, split="train"), len(neighbours))
    if found is None:
        raise DataError(f"{where}: --with-graph needs the run's graph to hold the images of its data, but the data "
                        f"named in the run's config no longer has the graph's {len(neighbours)} images; predict "
                        "without --with-graph")
    nodes_at = {key: node for node, key in enumerate(key for source in found[0] for key in _item_keys(source))}
    held = "training images" + (" and test images" if config.training.transductive else "")
    keys = _item_keys(dataset)
    missing = [key for key in keys if key not in nodes_at]
    if missing:
        raise DataError(f"{where}: --with-graph reads each image's graph neighbours, but the image at position "
                        f"{missing[0][1]} ({len(missing)} in all) is not in the run's graph, which holds its {held}; "
                        "predict the run's own data (its config, or one split of it with --split), or without --with-graph")
    nodes = torch.as_tensor([nodes_at[key] for key in keys])
    node_images = torch.cat([dataset_tensors(source, keys=("image",))["image"] for source in found[0]])
    images = dataset_tensors(dataset, keys=("image",))["image"] if images is None else images
    if not torch.equal(node_images[nodes], images.to(node_images.dtype)):
        raise DataError(f"{where}: --with-graph reads each image's graph neighbours, but these images are not those "
                        "the run's graph was built on (other data at the same positions); predict the run's own "
                        "data, or without --with-graph")
    if probabilities is None:
        every = cluster_probabilities(model, node_images, batch_size=batch_size).float()
    else:  # only the nodes the caller did not score
        every = torch.empty(len(node_images), probabilities.shape[1])
        every[nodes] = probabilities.float().cpu()
        others = torch.ones(len(node_images), dtype=torch.bool)
        others[nodes] = False
        if others.any():
            every[others] = cluster_probabilities(model, node_images[others], batch_size=batch_size).float()
    return neighbour_consensus(every, neighbours)[nodes]


def _item_keys(dataset) -> list[tuple[str, int]]:
    """Each item's ``(split, position in the source)``: a split's own items, or the items of
    every split (``split="all"`` with ``item_splits``, or both splits one after the other)."""
    parts = getattr(dataset, "parts", None) or [dataset]
    keys = []
    for part in parts:
        n = len(part)
        positions = getattr(part, "source_indices", None)
        positions = range(n) if positions is None else positions
        splits = getattr(part, "item_splits", None) or [getattr(part, "split", None)] * n
        keys += [(str(split), int(position)) for split, position in zip(splits, positions)]
    return keys


def consensus_report(model, config, graph: dict | None, split: str, dataset, *, batch_size: int = 256) -> dict | None:
    """Accuracy, NMI and ARI of the neighbour consensus on ``dataset``, the run's ``split`` (when
    it has labels), how many images it moves from the model's own cluster; ``None`` for a run
    without a graph (``graph``: the checkpoint's), or a split the graph does not hold."""
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
    agreed = neighbour_consensus(probabilities, neighbours)[rows]
    clusters = agreed.argmax(1).numpy()
    own = probabilities[rows].argmax(1).numpy()
    k = int(probabilities.shape[1])
    out = {"neighbours": int(neighbours.shape[1]), "moved_images": int((clusters != own).sum())}
    labels = parts[position].get("label")
    if labels is not None:
        out.update({key: value for key, value in clustering_metrics(labels.numpy(), clusters, n_clusters=k).items()
                    if key in ("accuracy", "nmi", "ari", "cluster_sizes")})
    else:
        out["cluster_sizes"] = np.bincount(clusters, minlength=k).tolist()
    return out


__all__ = ["consensus_of_images", "consensus_report", "graph_sources", "neighbour_consensus"]
