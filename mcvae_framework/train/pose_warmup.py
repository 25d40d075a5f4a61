"""Teaching the pose head the invariant graph's poses before the VAE trains
(``graph.pose_warmup_steps``).

The ``pose_guide`` term teaches the pose head the graph's synchronised poses while the
ELBO trains, but a pose head started at the identity learns 3-D rotations only after a
long plateau: trained on the true rotations of the blob volumes alone, encoder and pose head
held the term near 0.7-1.0 for ~1,000 steps before it fell to 0.01 within 300 more. A run of
the subtomogram benchmark takes 900 ELBO steps in all, each of them pulled the other way by
the reconstruction of an untrained decoder: the term stopped on the plateau (0.73) and the
model's rotations ended 70 degrees from the truth though the graph's were 3 degrees from it.

So before pretraining the encoder and the pose head learn the graph's poses alone: the
same term (:func:`~mcvae_framework.model.losses.pose_guide_term`, the graph's confident
images, each cluster in its own frame) on random batches of the training images, an
encoder pass per step and no decoder: on the subtomograms a step took 45 ms against an ELBO
step's 0.8 s.
It stops after ``steps`` steps or as soon as the term's mean over the last
:data:`WINDOW` steps falls below ``stop_below`` (the default 0.02 is ``1 - cos`` of 11 degrees).

Rank 0 runs it; the trainer then copies the encoder and the pose head to every process.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from ..model.guide import Guide
from ..model.losses import pose_guide_term
from .batching import STREAM_POSE_WARMUP, derive_seed

log = logging.getLogger("mcvae_framework.train.trainer")

#: steps the stopping rule averages the term over.
WINDOW = 50


@dataclass
class PoseWarmup:
    """What a pose warm-up did: steps run, the term's mean over the first and the last
    :data:`WINDOW` steps, and its wall time."""

    steps: int
    first: float
    last: float
    seconds: float


def warm_up_pose(model, images: torch.Tensor, guide: Guide, *, steps: int, batch_size: int, lr: float,
                 component_weight: float = 1.0, stop_below: float = 0.02, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> PoseWarmup:
    """Train ``model``'s encoder and pose head on the ``pose_guide`` term of ``guide`` (its
    ``angles`` or ``poses``, ``angle_clusters`` and ``confident``, one row per image of
    ``images``) for up to ``steps`` Adam steps of ``batch_size`` confident images.

    :raises ValueError: when the guide holds no poses or trusts no image.
    """
    if guide.angles is None and guide.poses is None:
        raise ValueError("the pose warm-up needs the graph's synchronised angles or poses, and the guide holds neither")
    trusted = torch.nonzero(guide.confident.cpu()).squeeze(1)
    if len(trusted) == 0:
        raise ValueError("the pose warm-up needs confident images, and the graph trusts none "
                         "(raise graph.confident_fraction)")
    start = time.perf_counter()
    guide = guide.to(device)
    parameters = [p for module in (model.encoder, model.pose_head) for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=lr)
    was_training = model.training
    model.train()
    history: list[float] = []
    try:
        for _ in range(steps):
            pick = trusted[torch.randint(len(trusted), (min(batch_size, len(trusted)),), generator=generator)]
            enc = model.encode(images[pick].to(device))
            term = pose_guide_term(model, enc, guide, pick.to(device), component_weight)
            optimizer.zero_grad(set_to_none=True)
            term.backward()
            optimizer.step()
            history.append(float(term.detach()))
            if len(history) >= WINDOW and sum(history[-WINDOW:]) / WINDOW < stop_below:
                break
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)  # the run's own optimiser starts from clean gradients
    window = min(WINDOW, len(history))
    return PoseWarmup(steps=len(history), first=sum(history[:window]) / max(window, 1),
                      last=sum(history[-window:]) / max(window, 1), seconds=time.perf_counter() - start)


def warm_up_on_graph(model, graph, images: torch.Tensor, config, device) -> PoseWarmup:
    """:func:`warm_up_pose` on the graph's synchronised poses of the training ``images``, with the
    run's batch size, learning rate and seed; logs what it did."""
    guide = Guide(labels=graph.labels, confident=graph.confident, angles=graph.angles, poses=graph.poses,
                  angle_clusters=graph.labels)
    generator = torch.Generator().manual_seed(derive_seed(config.training.seed, STREAM_POSE_WARMUP))
    most = config.graph.pose_warmup_steps
    done = warm_up_pose(model, images, guide, steps=most, batch_size=config.training.batch_size,
                        lr=config.training.lr, component_weight=config.loss.pose_guide_component_weight,
                        generator=generator, device=device)
    log.info("pose warm-up: the pose head learned the graph's synchronised poses for %d steps (of at most %d): "
             "pose guide term %.3f -> %.3f, %.1f s", done.steps, most, done.first, done.last, done.seconds)
    return done


__all__ = ["PoseWarmup", "WINDOW", "warm_up_on_graph", "warm_up_pose"]
