"""The framework as a scikit-learn estimator, for notebooks: :class:`InvariantClustering`.

A layer above training (it trains with :mod:`mcvae_framework.train` and reads the run
with :mod:`mcvae_framework.report`); nothing below imports it.
"""

from .invariant_clustering import InvariantClustering, as_images, default_config

__all__ = ["InvariantClustering", "as_images", "default_config"]
