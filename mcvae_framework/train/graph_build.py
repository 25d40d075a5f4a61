"""The invariant graph of a run's images, built one way for the trainer and for ``mcvae graph``.

:func:`build_invariant_graph` takes the experiment config's ``graph`` section and
``training.seed`` (so ``mcvae graph CONFIG`` finds exactly the clusters a training of CONFIG
starts from), logs the settings it chose, and under ``torchrun`` builds the graph once, on
rank 0, and hands the result to every process. :func:`dataset_images` gives it a dataset's
images: the tensor of an in-memory dataset, or an
:class:`~mcvae_framework.graph.chunks.ImageChunks` that reads a streamed one (a memory-mapped
``.npy``, an MRC stack, an HDF5 file) a chunk at a time.
"""

from __future__ import annotations

import logging

import torch

from ..graph.chunks import ImageChunks
from ..graph.invariant_graph import GraphClusters, describe_choice, invariant_graph_clusters
from ..runtime.data import read_items

log = logging.getLogger("mcvae_framework.train.trainer")


def dataset_images(dataset, progress: str | None = None) -> ImageChunks:
    """The images of ``dataset`` a chunk at a time: cut from its ``as_tensors()["image"]`` when
    it holds them in memory, otherwise read through its batched ``__getitems__`` (a streamed
    dataset reads its file).

    :param progress: title of a progress bar over the graph's pass through the images.
    """
    as_tensors = getattr(dataset, "as_tensors", None)
    tensors = as_tensors() if callable(as_tensors) else None
    if tensors is not None:
        images = tensors["image"]
        return ImageChunks(lambda positions: images[torch.as_tensor(positions)], len(images), images.shape[1:],
                           progress=progress)

    def read(positions):
        return torch.stack([item["image"] for item in read_items(dataset, positions.tolist())])

    return ImageChunks(read, len(dataset), read_items(dataset, [0])[0]["image"].shape, progress=progress)


def build_invariant_graph(config, images, group, n_clusters: int, *, context=None,
                          progress: bool = False) -> GraphClusters:
    """The invariant graph of ``images`` with ``config.graph``'s settings and seed ``training.seed``.

    :param images: what :func:`dataset_images` returns (only rank 0 reads them: other
        processes may pass ``None``).
    :param group: the run's :class:`~mcvae_framework.interfaces.LieGroup`.
    :param n_clusters: the mixture prior's component count.
    :param context: the :class:`~mcvae_framework.runtime.distributed.DistributedContext`; rank 0
        builds, every process returns the same graph. ``None``: one process.
    """
    graph = None
    if context is None or context.is_main:
        log.info("building the invariant graph of %d images in %d clusters", len(images), n_clusters)
        graph = invariant_graph_clusters(images, group, n_clusters, config.graph, seed=config.training.seed,
                                         progress=progress)
        log.info("invariant graph: %s", describe_choice(graph.info))
        chosen = ("neighbour_search", "backend", "nprobe", "copies_queried", "exact_rows", "neighbour_seconds",
                  "eigensolver", "kmeans")
        log.info("invariant graph: %d confident images, %.1f s; %s", int(graph.confident.sum()), graph.seconds,
                 ", ".join(f"{key} {graph.info[key]}" for key in chosen if key in graph.info))
    if context is not None:
        graph = context.all_gather_objects(graph)[0]
    return graph


__all__ = ["build_invariant_graph", "dataset_images"]
