"""What a plugin supplies: the interfaces of the five component kinds.

A plugin imports from here (and from :mod:`mcvae_framework`), never from another plugin.
"""

from .data import ImageDataset, ParticleStack
from .group import AffineGroup2D, LieGroup
from .networks import Decoder, Encoder, PoseReadout
from .prior import MixturePrior, assignment_moments, validate_latents

__all__ = ["AffineGroup2D", "Decoder", "Encoder", "ImageDataset", "LieGroup", "MixturePrior", "ParticleStack",
           "PoseReadout",
           "assignment_moments", "validate_latents"]
