"""Whether a config's data holds enough images for its prior and its invariant graph, asked
before anything trains (``mcvae config validate``, and the trainer before it makes the run
folder): a few images too few would otherwise fail deep in the graph or the prior's fit.
The data is counted through the dataset's ``split_sizes()`` (or its length); the graph is
not built to find out.
"""

from __future__ import annotations

from ..errors import ConfigError
from .components import build


def training_image_count(config) -> int:
    """How many images ``config`` trains on (the test split's too with ``training.transductive``),
    counted from the training split's ``split_sizes()`` (or its length): the data is built,
    nothing else."""
    train = build("data", config.data, split="train")
    try:
        sizes = train.split_sizes()
    except NotImplementedError:
        sizes = {"train": len(train)}
    count = sizes.get("train", len(train))
    if config.training.transductive:
        count += sizes["test"] if "test" in sizes else len(build("data", config.data, split="test"))
    return count


def too_few_images(config, n_train: int) -> list[tuple[str, str]]:
    """``(field path, message)`` when ``n_train`` training images are too few for the prior's
    components (the mixture is fitted to the encoded training images) or, with the graph on,
    for the invariant graph's neighbours and clusters; nothing is trained or built but the prior."""
    components = build("prior", config.prior, dim=config.model.z_cluster_dim).n_components
    images = f"{n_train} training image{'s' if n_train != 1 else ''}" + (
        " (test split included: training.transductive)" if config.training.transductive else "")
    graph = config.graph
    neighbours = graph.resolved_neighbours(n_train)
    if graph.enabled and n_train <= max(neighbours, components):
        return [("data", f"{images} are too few for the invariant graph: every image needs graph.neighbours "
                         f"({neighbours}) other images, and the graph's {components} clusters (one per "
                         f"component of the prior) need more images than that too; give at least "
                         f"{max(neighbours, components) + 1} images, or lower graph.neighbours or the "
                         "prior's component count")]
    if n_train < components:
        return [("data", f"{images} are too few for the prior's {components} components (the mixture is fitted "
                         f"to the encoded training images, at least one per component); give at least {components} "
                         "images, or lower the prior's component count")]
    return []


def check_data_size(config, source: str | None = None, n_train: int | None = None):
    """``config`` itself, or one :class:`ConfigError` (exit code 2) when its data holds too
    few images (:func:`too_few_images`); ``n_train`` is counted when not given."""
    problems = too_few_images(config, training_image_count(config) if n_train is None else n_train)
    if problems:
        raise ConfigError(problems, source)
    return config


__all__ = ["check_data_size", "too_few_images", "training_image_count"]
