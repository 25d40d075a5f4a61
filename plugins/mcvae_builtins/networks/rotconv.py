"""``rotconv``: an encoder equivariant to the rotations C_N, whose pooled features are
rotation invariant and whose orientation readout hands the pose head the angle.

Lifting convolution, then group convolutions (``rotations.py``), each followed by batch
norm sharing its statistics over the rotation axis, the activation and an average pool
that a quarter turn maps onto itself. On the last maps:

* features (for ``z_c``, ``z_v`` and the pose head): pooled over the rotations (max or
  mean), then over space (mean and max side by side), then an optional dense layer --
  invariant under every rotation of C_N (exactly for quarter turns when ``N % 4 == 0``);
* orientation: a learned score per rotation (a dot product with the channels averaged
  over space), so that a rotation of the input by ``2 pi k / N`` shifts the scores by
  ``k``; read as the best rotation refined within its bin by a parabola through its
  neighbours (``readout: peak``), or as the circular mean of the scores' softmax
  (``readout: soft``), which the pose losses' gradients reach at every angle;
* pose features: where the first layer responds (centre, log radius and elongation of
  its energy), for the groups that translate, zoom or stretch.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, PositiveInt, field_validator
from torch import nn

from mcvae_framework import ComponentConfig
from mcvae_framework.interfaces import Encoder, PoseReadout

from .common import Activation, check_image_shape, make_activation
from .rotations import GroupConv, LiftingConv, halve


class RotConvEncoderConfig(ComponentConfig):
    """Equivariant to the N rotations of C_N: rotation-invariant features and an
    orientation readout for the pose head."""

    type: Literal["rotconv"] = "rotconv"
    rotations: int = Field(8, ge=1, le=64, description="N, the rotations of C_N (multiples of 4 keep quarter turns exact)")
    channels: list[PositiveInt] = Field(
        [8, 16, 16], min_length=1,
        description="channels per rotation: the lifting convolution's, then each group convolution's",
    )
    kernel_size: int = Field(5, ge=1, description="odd kernel side of the lifting convolution")
    group_kernel_size: int = Field(3, ge=1, description="odd kernel side of the group convolutions")
    lift_halvings: int = Field(
        2, ge=0, le=4, description="average pools after the lifting convolution, each about halving the side "
        "(the first one before its norm and activation; every later group convolution but the last is "
        "followed by one more); group convolutions cost N times a plain one, so they run on the small maps"
    )
    group_pool: Literal["max", "mean"] = Field("max", description="pooling over the rotations for the invariant features")
    batch_norm: bool = Field(True, description="batch norm after each convolution, one set of statistics per channel "
                             "shared by its N rotations")
    activation: Activation = Field("relu", description="non-linearity after each layer")
    feature_dim: PositiveInt | None = Field(
        128, description="size of a dense layer on the pooled features (null: the pooled features, 2 x channels[-1])"
    )
    orientation: bool = Field(
        True, description="hand the orientation readout to the pose head (its angle then starts at the readout)"
    )
    readout: Literal["peak", "soft"] = Field(
        "peak", description="angle of the orientation scores: peak (the best rotation, refined within its bin; "
        "gradients move it by at most half a bin) or soft (the circular mean of their softmax, differentiable "
        "everywhere, so a pose loss can move it across bins)"
    )

    @field_validator("kernel_size", "group_kernel_size")
    @classmethod
    def _odd(cls, value):
        if value % 2 == 0:
            raise ValueError(f"kernel side {value} is even; use an odd side so that filters turn about a pixel")
        return value


class RotConvEncoder(Encoder):
    """``(N, C, H, H)`` images -> ``(N, feature_dim)`` rotation-invariant features; also
    :meth:`forward_with_pose` and :meth:`orientation_logits`."""

    #: pose features: centre x, centre y, log radius, elongation (two components).
    pose_feature_dim = 5

    def __init__(self, config: RotConvEncoderConfig, image_shape):
        super().__init__()
        self.image_shape = check_image_shape(image_shape, "encoder", "rotconv")
        self.n = config.rotations
        self.group_pool = config.group_pool
        self.lift_halvings = config.lift_halvings
        self.readout = soft_readout_angle if config.readout == "soft" else readout_angle
        widths = [self.image_shape[0], *config.channels]
        convs = [LiftingConv(widths[0], widths[1], self.n, config.kernel_size)]
        convs += [GroupConv(a, b, self.n, config.group_kernel_size) for a, b in zip(widths[1:-1], widths[2:])]
        self.convs = nn.ModuleList(convs)
        # BatchNorm3d over (B, C, N, H, W) keeps one mean and variance per channel, shared by the rotations.
        self.norms = nn.ModuleList(nn.BatchNorm3d(w) if config.batch_norm else nn.Identity() for w in widths[1:])
        self.act = make_activation(config.activation)
        # One weight per channel; a bias would raise every rotation's score alike.
        self.score = nn.Linear(widths[-1], 1, bias=False) if config.orientation else None
        pooled = 2 * widths[-1]
        if config.feature_dim is None:
            self.head, self.feature_dim = nn.Identity(), pooled
        else:
            self.head = nn.Sequential(nn.Linear(pooled, config.feature_dim), make_activation(config.activation))
            self.feature_dim = config.feature_dim

    def _maps(self, x: torch.Tensor, energy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The last group maps ``(B, C, N, h, w)`` and (if asked) the first layer's energy
        ``(B, H, W)``, which is rotation invariant along the group axis and turns with x."""
        h, first = x, None
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            # The first pool comes before the norm and the activation: on the full-size maps
            # they would cost more than the lifting convolution itself.
            h = conv(h, halve_after=bool(self.lift_halvings)) if i == 0 else conv(h)
            h = self.act(norm(h))
            if i == 0 and energy:
                first = h.pow(2).mean(dim=(1, 2))
            for _ in range(self.lift_halvings - 1 if i == 0 else int(i < len(self.convs) - 1)):
                if h.shape[-1] > 1:
                    h = halve(h)
        return h, first

    def _features(self, maps: torch.Tensor) -> torch.Tensor:
        pooled = maps.amax(2) if self.group_pool == "max" else maps.mean(2)
        return self.head(torch.cat([pooled.mean(dim=(-2, -1)), pooled.amax(dim=(-2, -1))], dim=1))

    def _logits(self, maps: torch.Tensor) -> torch.Tensor:
        if self.score is None:
            raise RuntimeError("this rotconv encoder was configured with orientation: false and reads no orientation")
        return self.score(maps.mean(dim=(-2, -1)).transpose(1, 2)).squeeze(-1)  # (B, N)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(self._maps(x)[0])

    def orientation_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` scores of the rotations ``2 pi g / N`` (a softmax makes them a
        distribution); turning ``x`` by ``2 pi k / N`` rolls them by ``k``."""
        return self._logits(self._maps(x)[0])

    def forward_with_pose(self, x: torch.Tensor) -> PoseReadout:
        maps, energy = self._maps(x, energy=True)
        orientation = self.readout(self._logits(maps)) if self.score is not None else None
        return PoseReadout(self._features(maps), energy_moments(energy), orientation)


def readout_angle(logits: torch.Tensor) -> torch.Tensor:
    """``(B,)`` angle in ``(-pi, pi]`` of the best of ``N`` rotation scores, moved within its
    bin (at most half a bin) to the peak of the parabola through it and its neighbours."""
    n = logits.shape[1]
    best = logits.argmax(1, keepdim=True)
    if n < 3:
        offset = torch.zeros_like(best, dtype=logits.dtype)
    else:
        left = logits.gather(1, (best - 1) % n)
        mid = logits.gather(1, best)
        right = logits.gather(1, (best + 1) % n)
        curvature = (left - 2 * mid + right).clamp(max=-1e-6)  # <= 0 at a maximum
        offset = (0.5 * (left - right) / curvature).clamp(-0.5, 0.5)
    angle = (2 * math.pi / n) * (best.to(logits.dtype) + offset).squeeze(1)
    return torch.atan2(torch.sin(angle), torch.cos(angle))


def soft_readout_angle(logits: torch.Tensor) -> torch.Tensor:
    """``(B,)`` angle in ``(-pi, pi]`` of the circular mean of ``softmax(logits)`` over the
    ``N`` rotations ``2 pi g / N``. Rolling the scores by ``k`` turns it by exactly
    ``2 pi k / N``, and it moves smoothly with every score (no argmax), so its gradient
    never vanishes across a bin border; the scores' scale, learned, sets how sharp it is."""
    n = logits.shape[1]
    weights = torch.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=1)
    bins = (2 * math.pi / n) * torch.arange(n, device=logits.device, dtype=weights.dtype)
    sin, cos = weights @ torch.sin(bins), weights @ torch.cos(bins)
    # Scores nearly alike (a blank image) leave a resultant near 0, where atan2's gradient
    # is unbounded; such an angle is noise, so no gradient flows through it.
    flat = torch.hypot(sin, cos) < 1e-4
    sin, cos = torch.where(flat, sin.detach(), sin), torch.where(flat, cos.detach(), cos)
    return torch.atan2(sin, cos).to(logits.dtype)


def energy_moments(energy: torch.Tensor) -> torch.Tensor:
    """``(B, 5)``: centre ``(x, y)`` in normalised image coordinates, log radius of
    gyration, and elongation ``((Sxx - Syy), 2 Sxy) / (Sxx + Syy)`` of a ``(B, H, W)``
    non-negative map; all turn or shift with the image."""
    b, h, w = energy.shape
    weights = energy.flatten(1) + 1e-8
    weights = weights / weights.sum(1, keepdim=True)
    ys = (2 * torch.arange(h, dtype=energy.dtype, device=energy.device) + 1) / h - 1
    xs = (2 * torch.arange(w, dtype=energy.dtype, device=energy.device) + 1) / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    gx, gy = gx.flatten(), gy.flatten()
    cx, cy = weights @ gx, weights @ gy
    dx, dy = gx[None] - cx[:, None], gy[None] - cy[:, None]
    sxx, syy, sxy = (weights * dx * dx).sum(1), (weights * dy * dy).sum(1), (weights * dx * dy).sum(1)
    spread = (sxx + syy).clamp_min(1e-8)
    return torch.stack([cx, cy, 0.5 * torch.log(spread), (sxx - syy) / spread, 2 * sxy / spread], dim=1)


def make_rotconv_encoder(config: RotConvEncoderConfig, *, image_shape) -> RotConvEncoder:
    return RotConvEncoder(config, image_shape)
