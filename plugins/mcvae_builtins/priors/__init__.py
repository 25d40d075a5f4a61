"""Built-in priors plugin: ``gmm``, ``student_t`` and ``standard_normal`` mixture priors
for the invariant cluster latent ``z_c``."""

from __future__ import annotations

from mcvae_framework import hookimpl

from .gmm import GaussianMixturePrior, GMMConfig, make_gmm
from .standard_normal import StandardNormalConfig, StandardNormalPrior, make_standard_normal
from .student_t import StudentTConfig, StudentTMixturePrior, make_student_t

__all__ = [
    "GMMConfig",
    "GaussianMixturePrior",
    "StandardNormalConfig",
    "StandardNormalPrior",
    "StudentTConfig",
    "StudentTMixturePrior",
]


@hookimpl
def mcvae_register_priors(register):
    """Register the three built-in priors."""
    register(GMMConfig, make_gmm)
    register(StudentTConfig, make_student_t)
    register(StandardNormalConfig, make_standard_normal)
