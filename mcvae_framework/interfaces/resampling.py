"""What every resampling ``act`` shares: the level moved-in content takes (the image's
background), and images whose element is the identity returned bit for bit."""

from __future__ import annotations

import torch


def background_level(images: torch.Tensor) -> torch.Tensor:
    """``(N, C, 1, 1)`` (``(N, C, 1, 1, 1)`` for volumes): every image's median value outside
    the disc (ball) inscribed in its frame, where an object centred in the frame rarely
    reaches: the level that moved images are padded with. 0 for images on a black
    background (digits, shapes), the noise's mean for particles standardised onto a grey
    background."""
    sides = images.shape[2:]
    axes = torch.meshgrid(*[torch.arange(side, device=images.device, dtype=images.dtype) - (side - 1) / 2
                            for side in sides], indexing="ij")
    outside = sum(axis ** 2 for axis in axes) > (min(sides) / 2) ** 2
    if not bool(outside.any()):
        return images.new_zeros(images.shape[:2] + (1,) * len(sides))
    # the median: a stroke that reaches a corner (small digits) must not lift the level
    return images[..., outside].median(-1).values.view(images.shape[:2] + (1,) * len(sides))


def exact_at_identity(images: torch.Tensor, warped: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``warped`` (the images resampled by the elements ``g``, one per image), except that
    an image whose element is exactly the identity is returned bit for bit (resampling
    would blur it by rounding), while gradients still flow to ``g`` as through the warp.
    What ``act`` of ``AffineGroup2D`` and of the built-in volume group returns."""
    eye = torch.eye(g.shape[-1], dtype=g.dtype, device=g.device)
    is_identity = (g == eye).flatten(1).all(dim=1).view(-1, *[1] * (images.dim() - 1))
    if images.device.type == "cpu" and not bool(is_identity.any()):
        # asking is free on the CPU (on an accelerator it would force a synchronisation,
        # so there the select below always runs)
        return warped
    if torch.is_grad_enabled() and (g.requires_grad or images.requires_grad):
        # value of the exact image, gradient of the warp (so d/dg is not lost at g = I)
        exact = images.detach() + (warped - warped.detach())
    else:
        exact = images
    return torch.where(is_identity, exact, warped)
