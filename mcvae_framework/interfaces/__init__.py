"""What a plugin supplies: the interfaces of the five component kinds, and the helpers a
dataset plugin shares with the built-in datasets (config fields ``limit``, ``transform``,
``storage``; seeded splits; the seeded pose of every image; streaming).

A plugin imports from here (and from :mod:`mcvae_framework`), never from another plugin.
"""

from .data import ALL, SPLITS, ImageDataset, ParticleStack, sizes_with_all
from .datasets import (
    DatasetConfig,
    InMemoryImageDataset,
    ScaleToUnit,
    SeededSplitConfig,
    array_reader,
    balanced_first,
    build_split,
    check_split,
    finish_dataset,
    limited_size,
    merge_splits,
    resolve_path,
    seeded_split,
    to_unit_float,
)
from .group import AffineGroup2D, LieGroup
from .resampling import background_level, exact_at_identity
from .group_elements import OrthogonalBlock2D
from .networks import Decoder, Encoder, PoseReadout
from .prior import MixturePrior, assignment_moments, validate_latents
from .streaming import SourceReader, StreamingImageDataset, merge_streaming, wants_streaming
from .transform import TransformConfig, draw_poses, pose_generator, transform_images

__all__ = [
    # the interfaces
    "AffineGroup2D", "Decoder", "Encoder", "ImageDataset", "LieGroup", "MixturePrior", "OrthogonalBlock2D",
    "ParticleStack", "PoseReadout",
    "assignment_moments", "background_level", "exact_at_identity", "validate_latents",
    # what a dataset plugin shares with the built-ins
    "ALL", "SPLITS", "DatasetConfig", "InMemoryImageDataset", "ScaleToUnit", "SeededSplitConfig", "SourceReader",
    "StreamingImageDataset", "TransformConfig", "array_reader", "balanced_first", "build_split", "check_split",
    "draw_poses", "finish_dataset", "limited_size", "merge_splits", "merge_streaming", "pose_generator",
    "resolve_path", "seeded_split", "sizes_with_all", "to_unit_float", "transform_images", "wants_streaming",
]
