"""The pose head: features -> ``q(k, tau | x)``, the posterior of the pose.

For a connected group (one component) it is ``q(tau | x)``, a diagonal Gaussian on the
group's coordinates ``tau``, with each angle predicted as a ``(cos, sin)`` pair (a
real-valued output cannot follow an angle around the circle without a jump) or, for a
group that converts a network's numbers itself (``network_pose_size``, e.g. the six
numbers of a 3-D rotation), through the group's :meth:`tau_from_network`.

For a group with a discrete part (``n_components = K > 1``: a reflection, the elements
of a finite group) the head also predicts ``K`` logits of ``q(k | x)`` and one Gaussian
``q(tau | x, k)`` per component: each hypothesis of the discrete part has its own best
continuous pose (a mirror image needs another angle than the image itself). The ELBO then
enumerates the components (:mod:`mcvae_framework.model.pose_terms`): exact and without a
gradient estimator, at the cost of ``K`` image warps per image, small for the groups in
view (2 for O(2), 4 for C4); a Gumbel-softmax relaxation would need one warp but adds
variance and a temperature to tune.

The head starts at the identity for every input (zero weights; ``(cos, sin) = (1, 0)``;
``tau_from_network(0)`` is the identity) with a uniform ``q(k | x)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Posterior:
    """A diagonal Gaussian ``q(. | x)`` given by its mean and log-variance, ``(N, d)`` each
    (``(N, K, d)`` for one Gaussian per component)."""

    mean: torch.Tensor
    logvar: torch.Tensor

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        # The noise is drawn where the generator lives (the trainer's is on the CPU).
        device = generator.device if generator is not None else self.mean.device
        noise = torch.randn(self.mean.shape, generator=generator, device=device, dtype=self.mean.dtype)
        noise = noise.to(self.mean.device)
        return self.mean + torch.exp(0.5 * self.logvar) * noise

    def entropy(self) -> torch.Tensor:
        """``(N,)`` (or ``(N, K)``) differential entropy."""
        d = self.mean.shape[-1]
        return 0.5 * (self.logvar.sum(-1) + d * (1.0 + math.log(2 * math.pi)))

    def kl_standard_normal(self) -> torch.Tensor:
        """``(N,)`` closed-form ``KL(q || N(0, I))``."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).sum(-1)

    def select(self, component: torch.Tensor) -> "Posterior":
        """``(N, K, d)`` -> ``(N, d)``: each image's Gaussian of its ``component`` ``(N,)``."""
        index = component.view(-1, 1, 1).expand(-1, 1, self.mean.shape[-1])
        return Posterior(self.mean.gather(1, index).squeeze(1), self.logvar.gather(1, index).squeeze(1))


@dataclass
class PoseEncoding(Posterior):
    """What the pose head says about a batch: itself ``q(tau | x)`` (of the most probable
    component), ``(N, dim)`` mean and log-variance, and for a group with a discrete part:

    :ivar logits: ``(N, K)`` logits of ``q(k | x)``, or ``None`` for a connected group.
    :ivar per_component: ``q(tau | x, k)`` for every component, ``(N, K, dim)``, or ``None``.
    """

    logits: torch.Tensor | None = None
    per_component: Posterior | None = None

    @property
    def component(self) -> torch.Tensor | None:
        """``(N,)`` the most probable component (``None`` for a connected group)."""
        return None if self.logits is None else self.logits.argmax(-1)


def head_body(in_features: int, hidden: int) -> tuple[nn.Module, int]:
    """The optional hidden layer of a posterior head, and the width it leaves."""
    if not hidden:
        return nn.Sequential(), in_features
    return nn.Sequential(nn.Linear(in_features, hidden), nn.SiLU()), hidden


class PoseHead(nn.Module):
    """Features -> :class:`PoseEncoding` (see the module docstring).

    Output layout per component: the mean's numbers (``dim`` values, an angle's cos in its
    own column, then one sin per angle; or ``network_pose_size`` numbers), then ``dim``
    log-variances; after the ``K`` components' blocks, ``K`` logits (``K > 1`` only). A
    connected group's layout is the same as before components existed, so its checkpoints
    load unchanged.
    """

    def __init__(self, in_features: int, group, hidden: int = 0, logvar_init: float = -6.0):
        super().__init__()
        self.group = group
        self.dim = group.dim
        self.n_components = int(getattr(group, "n_components", 1) or 1)
        self.network_size = int(getattr(group, "network_pose_size", 0) or 0)
        self.angles = [] if self.network_size else list(group.angle_coordinates)
        self.n_mean = self.network_size or self.dim + len(self.angles)
        self.block = self.n_mean + self.dim
        self.body, width = head_body(in_features, hidden)
        k = self.n_components
        self.out = nn.Linear(width, k * self.block + (k if k > 1 else 0))
        with torch.no_grad():
            self.out.weight.zero_()
            self.out.bias.zero_()
            for c in range(k):
                start = c * self.block
                self.out.bias[[start + a for a in self.angles]] = 1.0
                self.out.bias[start + self.n_mean:start + self.block] = logvar_init

    def _mean(self, raw: torch.Tensor, orientation: torch.Tensor | None) -> torch.Tensor:
        """``(M, n_mean)`` numbers -> ``(M, dim)`` ``tau``."""
        if self.network_size:
            return self.group.tau_from_network(raw)
        mean = raw[:, : self.dim]
        if not self.angles:
            return mean
        cos, sin = mean[:, self.angles], raw[:, self.dim:self.n_mean]
        if orientation is not None:
            # Turn the first (cos, sin) pair by the orientation: atan2 then wraps the sum.
            c, s = torch.cos(orientation), torch.sin(orientation)
            first = torch.stack([c * cos[:, 0] - s * sin[:, 0], s * cos[:, 0] + c * sin[:, 0]])
            cos = torch.cat([first[0, :, None], cos[:, 1:]], dim=1)
            sin = torch.cat([first[1, :, None], sin[:, 1:]], dim=1)
        theta = torch.atan2(sin, cos)
        return mean.index_copy(1, torch.tensor(self.angles, device=mean.device), theta)

    def forward(self, features: torch.Tensor, orientation: torch.Tensor | None = None) -> PoseEncoding:
        """``orientation``: an ``(N,)`` angle the encoder read (see
        :class:`~mcvae_framework.interfaces.PoseReadout`); the first angle of every component
        is then that angle plus the head's own, which starts at 0."""
        raw = self.out(self.body(features))
        n, k = raw.shape[0], self.n_components
        blocks = raw[:, : k * self.block].reshape(n * k, self.block)
        turn = orientation.repeat_interleave(k) if orientation is not None else None
        mean = self._mean(blocks[:, : self.n_mean], turn)
        # Bounded log-variance keeps exp() finite early in training.
        logvar = blocks[:, self.n_mean:].clamp(-12.0, 6.0)
        if k == 1:
            return PoseEncoding(mean, logvar)
        per_component = Posterior(mean.view(n, k, self.dim), logvar.view(n, k, self.dim))
        logits = raw[:, k * self.block:]
        mode = per_component.select(logits.argmax(-1))
        return PoseEncoding(mode.mean, mode.logvar, logits, per_component)
