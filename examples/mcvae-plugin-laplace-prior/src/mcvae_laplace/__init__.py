"""mcvae_laplace: a Laplace mixture prior for the cluster latent, as an mcvae_framework plugin."""

from __future__ import annotations

from mcvae_framework import hookimpl

from .prior import LaplaceMixtureConfig, LaplaceMixturePrior

__all__ = ["LaplaceMixtureConfig", "LaplaceMixturePrior", "make_laplace_mixture"]


def make_laplace_mixture(config: LaplaceMixtureConfig, dim: int) -> LaplaceMixturePrior:
    """The factory registered for the ``laplace_mixture`` tag.

    Prior factories get the latent size as context: ``factory(config, dim=d)``, where ``d``
    is the experiment's ``model.z_cluster_dim``.

    :param config: the validated ``prior`` section.
    :param dim: size of the latent the prior is over.
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"laplace_mixture: dim (the latent size) must be a positive integer, got {dim!r}")
    return LaplaceMixturePrior(config, dim)


@hookimpl
def mcvae_register_priors(register):
    """Register the ``laplace_mixture`` prior."""
    register(LaplaceMixtureConfig, make_laplace_mixture)
