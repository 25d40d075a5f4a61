"""What a plugin supplies: the interfaces of the five component kinds.

A plugin imports from here (and from :mod:`mcvae_framework`), never from another plugin.
"""

from .data import ImageDataset
from .group import LieGroup
from .networks import Decoder, Encoder
from .prior import MixturePrior

__all__ = ["Decoder", "Encoder", "ImageDataset", "LieGroup", "MixturePrior"]
