"""What the invariant graph hands to the loss: :class:`Guide`, the labels and the rest of the
graph's results that the graph-guided terms (:data:`~mcvae_framework.config.sections.GUIDED_TERMS`)
read, each indexed by a training image's ``index``.

The trainer (:mod:`mcvae_framework.train.guidance`) fills it and sets it on the
:class:`~mcvae_framework.model.losses.LossModule`; the loss runs a guided term when the
guide holds every field the term's declaration ``reads``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from ..config.sections import GuidedTerm


@dataclass
class Guide:
    """The graph's results for the guided loss terms, one row per training image.

    Only ``labels`` and ``confident`` are always there; the trainer fills the other fields
    when a switched-on term reads them.
    """

    #: ``(N,)`` the cluster the self-labelling term teaches for every training image.
    labels: torch.Tensor
    #: ``(N,)`` bool: which of ``labels`` are trusted.
    confident: torch.Tensor
    #: ``(N,)`` the graph's synchronised angles (pose guidance).
    angles: torch.Tensor | None = None
    #: ``(N,)`` the graph's clusters, in which the angles share a frame (pose guidance).
    angle_clusters: torch.Tensor | None = None
    #: ``(N, d, d)`` the graph's synchronised orthogonal poses, which stand for ``angles`` for a
    #: group with a discrete part or rotations of volumes (pose guidance).
    poses: torch.Tensor | None = None
    #: ``(N, k)`` the graph's neighbours of every image (neighbour consistency).
    neighbours: torch.Tensor | None = None
    #: ``(N, C, H, W)`` the training images, for the neighbours' encodings (neighbour consistency).
    images: torch.Tensor | None = None

    def serves(self, term: GuidedTerm) -> bool:
        """Whether this guide holds every field ``term`` reads (``poses`` in place of ``angles``)."""
        return all(getattr(self, name) is not None or (name == "angles" and self.poses is not None)
                   for name in term.reads)

    def to(self, device) -> Guide:
        """A copy with every tensor on ``device``."""
        return Guide(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name).to(device)
                        for f in fields(self)})


__all__ = ["Guide"]
