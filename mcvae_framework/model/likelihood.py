"""``p(x | ...)``, the reconstruction term's likelihood, and the noise level it needs.

Bernoulli suits images whose pixels are intensities in ``[0, 1]`` with little noise (digits,
shapes). Real-valued images with additive noise (cryo-EM particles, astronomy) want a
Gaussian whose standard deviation is the data's noise level: too small a value lets the
reconstruction term drown every other term in the noise it cannot explain, too large a
value lets the clusters ignore the images. ``loss.gaussian_std: auto`` reads the level from
the training images once (:func:`estimate_noise_std`); the model keeps it as a buffer, so an
evaluation of the run uses the same value.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_EPS = 1e-6
#: the smallest noise level ``auto`` returns (clean images would otherwise give ~0)
MIN_NOISE_STD = 0.01

#: Immerkaer's 3x3 mask: it cancels constants, ramps and smooth curvature, keeps noise
_NOISE_MASK = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])


def reconstruction_nll(prediction: torch.Tensor, target: torch.Tensor, loss_config,
                       noise_std: torch.Tensor | None = None) -> torch.Tensor:
    """``(N,)`` negative log-likelihood of ``target`` under the decoder's ``prediction``.

    :param noise_std: the estimated noise level, used when ``loss_config.gaussian_std`` is ``auto``.
    """
    if loss_config.likelihood == "bernoulli":
        # Written out rather than F.binary_cross_entropy, which raises on a NaN input:
        # a NaN must reach the trainer's check, which names the term.
        p = prediction.clamp(_EPS, 1 - _EPS)
        nll = -(target * torch.log(p) + (1 - target) * torch.log1p(-p))
    else:
        std = loss_config.gaussian_std
        std = noise_std.to(prediction) if std == "auto" else torch.tensor(std, dtype=prediction.dtype,
                                                                          device=prediction.device)
        nll = 0.5 * ((prediction - target) / std).pow(2) + torch.log(std * math.sqrt(2 * math.pi))
    return nll.flatten(1).sum(-1)


def estimate_noise_std(images: torch.Tensor) -> float:
    """The standard deviation of white noise in ``(N, C, H, W)`` images (Immerkaer 1996, "Fast
    noise variance estimation"): the mean absolute response to a mask that cancels smooth
    content, scaled so that pure Gaussian noise of deviation ``s`` gives ``s``. Edges add a
    little; at least :data:`MIN_NOISE_STD`. ``(N, C, D, H, W)`` volumes: over their 2-D slices."""
    # every channel (and every slice of a volume) alike
    images = images.detach().to("cpu", torch.float64).reshape(-1, 1, *images.shape[-2:])
    response = F.conv2d(images, _NOISE_MASK.to(images).view(1, 1, 3, 3))
    sigma = math.sqrt(math.pi / 2) * response.abs().mean().item() / 6.0
    return max(sigma, MIN_NOISE_STD)


__all__ = ["MIN_NOISE_STD", "estimate_noise_std", "reconstruction_nll"]
