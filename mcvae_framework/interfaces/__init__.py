"""What a plugin supplies: the interfaces of the five component kinds.

A plugin imports from here (and from :mod:`mcvae_framework`), never from another plugin.
"""

from .data import ImageDataset
from .group import AffineGroup2D, LieGroup, exact_at_identity
from .group_elements import OrthogonalBlock2D
from .networks import Decoder, Encoder, PoseReadout
from .prior import MixturePrior, assignment_moments, validate_latents

__all__ = ["AffineGroup2D", "Decoder", "Encoder", "ImageDataset", "LieGroup", "MixturePrior", "OrthogonalBlock2D",
           "PoseReadout", "assignment_moments", "exact_at_identity", "validate_latents"]
