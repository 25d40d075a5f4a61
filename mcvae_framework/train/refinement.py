"""Refining the invariant graph's clusters with the model's own encoder (``graph.refine_epochs``).

The graph labels the images it is sure of well and the rest less well: the images far from
their cluster's centre are exactly the ones a spectral embedding of a pixel graph gets wrong.
A network trained on the confident images alone generalises to the others no better than the
graph (the encoder has nothing pulling the uncertain images anywhere); one trained on the
confident images *and* asked to agree with each image's invariant neighbours (SCAN's
consistency term, Van Gansbeke et al. 2020), with a balance term so that no cluster takes
the others, labels the uncertain images better than the graph did.

So before the VAE trains, the MCE-VAE's encoder is warmed up discriminatively:

* a linear read-out ``r(f(x))`` over the encoder's invariant features ``f`` (what the cluster
  and style heads read) gives ``p(k|x) = softmax(r(f(x)))_k``;
* the loss of a step is ``CE(p(.|h.x), label(x))`` over a batch of the graph's confident
  images, each moved by a random pose ``h`` of the group, plus ``neighbour_weight *
  -log sum_k p(k|x) p(k|x_n)`` over random images and one of their graph neighbours each,
  plus ``balance_weight * KL(mean p || uniform)`` over those;
* afterwards every training image is labelled ``argmax_k p(k|x)``, after ``graph.refine_smoothing``
  rounds of label propagation of ``p`` over the graph (:func:`propagate`). Those labels replace the
  graph's: they warm-start the mixture prior and feed the self-labelling term, every image
  trusted. The read-out is dropped (started as the cluster head's mean layer, so that ``z_c``
  begins as its logits, the model clustered worse: 0.907 against 0.928 on protocol (a)); the
  encoder keeps what it learned.

Rank 0 runs it; the trainer then copies the encoder to every process.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from ..model.losses import balance_kl, fixed_prior_log_q, neighbour_disagreement
from ..model.pose_terms import random_elements
from ..report.inference import cluster_probabilities


@dataclass
class RefinedLabels:
    """The refined label and its probability for every training image, and what it cost.

    :ivar labels: ``(N,)`` int64, ``0..K-1``.
    :ivar confidence: ``(N,)`` float32, the read-out's probability of that label.
    :ivar changed: share of the images whose label differs from the graph's.
    :ivar seconds: wall time.
    """

    labels: torch.Tensor
    confidence: torch.Tensor
    changed: float
    seconds: float


def propagate(probabilities: torch.Tensor, neighbours: torch.Tensor, rounds: int) -> torch.Tensor:
    """Label propagation over the graph: ``rounds`` times ``q <- (p + mean of the neighbours' q) / 2``,
    from ``q = p``. An image the read-out is unsure of follows its invariant neighbours; one it
    is sure of keeps at least half its own say."""
    smoothed = probabilities
    for _ in range(rounds):
        smoothed = 0.5 * probabilities + 0.5 * smoothed[neighbours].mean(1)
    return smoothed


def refine_labels(model, images: torch.Tensor, labels: torch.Tensor, trusted: torch.Tensor,
                  neighbours: torch.Tensor, *, epochs: int, batch_size: int, lr: float,
                  neighbour_weight: float = 1.0, balance_weight: float = 1.0, smoothing: int = 0,
                  generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                  progress: bool = False) -> RefinedLabels:
    """Train ``model``'s encoder (in place) on the graph's labels and neighbours; relabel.

    :param model: the :class:`~mcvae_framework.model.mcevae.MCEVAE`; its encoder is trained through
        :meth:`~mcvae_framework.model.mcevae.MCEVAE.invariant_features`.
    :param images: ``(N, C, H, W)`` training images, on the CPU.
    :param labels: ``(N,)`` the graph's clusters, ``0..K-1`` for the prior's ``K`` components.
    :param trusted: ``(N,)`` bool, the images whose label the cross-entropy learns.
    :param neighbours: ``(N, k)`` every image's graph neighbours.
    :param epochs: passes over the trusted images.
    :param lr: peak learning rate of a one-cycle schedule (Adam).
    :param smoothing: rounds of :func:`propagate` over ``neighbours`` applied to the read-out's
        probabilities before the labels are read off.
    :param generator: CPU generator for the batches and the random poses (seeded by the caller).
    """
    start = time.perf_counter()
    group = model.group
    readout = nn.Linear(model.encoder.feature_dim, model.prior.n_components).to(device)
    parameters = list(model.encoder.parameters()) + list(readout.parameters())
    optimizer = torch.optim.Adam(parameters, lr=lr)
    pool = torch.nonzero(trusted).squeeze(1)
    if len(pool) == 0:
        raise ValueError("label refinement: the graph trusts no image (graph.confident_fraction is too small)")
    steps_per_epoch = max(1, math.ceil(len(pool) / batch_size))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
    labels_device = labels.to(device)

    def log_probabilities(x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(readout(model.invariant_features(x.to(device))), dim=-1)

    was_training = model.training
    model.train()
    # disable=None: tqdm shows the bar on a terminal only, so a log file gets no carriage returns
    bar = tqdm(total=epochs * steps_per_epoch, desc="refining the graph's labels",
               disable=None if progress else True, leave=False, dynamic_ncols=True)
    try:
        for _ in range(epochs):
            order = pool[torch.randperm(len(pool), generator=generator)]
            for first in range(0, len(order), batch_size):
                index = order[first:first + batch_size]
                x = images[index]
                if group is not None:  # the label holds at every pose
                    h = random_elements(group, len(x), generator, x)
                    x = group.act(x, h)
                loss = nn.functional.nll_loss(log_probabilities(x), labels_device[index.to(device)])
                if neighbour_weight > 0 or balance_weight > 0:
                    anchors = torch.randint(len(images), (len(index),), generator=generator)
                    column = torch.randint(neighbours.shape[1], (len(index), 1), generator=generator)
                    partners = neighbours[anchors].gather(1, column).squeeze(1)
                    both = log_probabilities(torch.cat([images[anchors], images[partners]]))
                    anchor_log_p, partner_log_p = both.chunk(2)
                    loss = (loss + neighbour_weight * neighbour_disagreement(anchor_log_p, partner_log_p)
                            + balance_weight * balance_kl(both))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                bar.update(1)
        model.eval()
        with torch.no_grad():
            probabilities = torch.cat([log_probabilities(images[i:i + 512]).exp().cpu()
                                       for i in range(0, len(images), 512)])
    finally:
        bar.close()
        model.train(was_training)
    probabilities = propagate(probabilities, neighbours.cpu(), smoothing)
    confidence, refined = probabilities.max(-1)
    return RefinedLabels(labels=refined, confidence=confidence.float(),
                         changed=float((refined != labels.cpu()).double().mean()),
                         seconds=time.perf_counter() - start)


def distil_labels(model, images: torch.Tensor, labels: torch.Tensor, *, epochs: int, batch_size: int, lr: float,
                  generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> float:
    """Teach ``model``'s own clusters the graph's ``labels`` directly (in place): ``epochs`` passes of
    ``-log q(label(x) | h.x)``, ``q`` the mixture prior's responsibilities of ``z_c`` (the prior held
    fixed, as in the self-labelling term), at random poses ``h``, training the encoder and its heads
    and nothing else. The repair for a model whose clusters never matched its graph's: within the
    ELBO, the self-labelling term competes with every other term and can need many epochs to move a
    ``z_c`` that carries no class yet (noisy particles); alone it moves it in a few passes.

    :returns: the share of ``images`` whose cluster is their label afterwards.
    """
    group = model.group
    parameters = [p for name, p in model.named_parameters() if not name.startswith(("prior.", "decoder."))]
    optimizer = torch.optim.Adam(parameters, lr=lr)
    labels = labels.to(device)
    was_training = model.training
    model.train()
    try:
        for _ in range(epochs):
            order = torch.randperm(len(images), generator=generator)
            for first in range(0, len(order), batch_size):
                index = order[first:first + batch_size]
                x = images[index].to(device)
                if group is not None:
                    x = group.act(x, random_elements(group, len(x), generator, x))
                log_q = fixed_prior_log_q(model.prior, model.encode(x).z_cluster.mean)
                loss = nn.functional.nll_loss(log_q, labels[index.to(device)])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    finally:
        model.train(was_training)
    clusters = cluster_probabilities(model, images, device).argmax(-1)
    return float((clusters == labels.cpu()).double().mean())


__all__ = ["RefinedLabels", "distil_labels", "propagate", "refine_labels"]
