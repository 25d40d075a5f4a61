"""Convolutions equivariant to the discrete rotations C_N, in plain torch.

A feature map of the group is ``(B, C, N, H, W)``: channel, rotation, position. Rotating
the input by ``2 pi k / N`` (the groups' convention: content at ``p`` moves to ``R p``,
``y`` pointing down, so a positive angle turns clockwise as displayed) rotates every map
spatially and shifts the rotation axis by ``k``. Both layers build their filter banks from
learned filters at every call; the bank is tiny next to the convolution it feeds.

Rotations by multiples of 90 degrees are exact (``torch.rot90`` permutes pixels); the
others resample a smooth version of the filter (:func:`filter_rotation_matrix`). Copy ``g = q * step + r`` is the
``r``-th interpolated copy turned by ``q`` exact quarter turns, so rotating the input by a
quarter turn is an exact symmetry whenever ``N`` is a multiple of 4.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: width in pixels of the Gaussian bumps a filter is made of (see filter_rotation_matrix).
SMOOTHING = 0.6


def quarter_turns(t: torch.Tensor, q: int) -> torch.Tensor:
    """``t`` (``..., H, W``) turned by ``q`` quarter turns in the groups' convention
    (clockwise as displayed); exact."""
    # torch.rot90 turns from the first dim towards the second: counter-clockwise on screen.
    return torch.rot90(t, -q, dims=(-2, -1))


def filter_rotation_matrix(k: int, angle: float, sigma: float = SMOOTHING) -> torch.Tensor:
    """``(k*k, k*k)`` matrix ``M`` with ``M @ w.flatten()`` the ``k x k`` filter ``w`` turned
    by ``angle``: the filter is read as a sum of Gaussian bumps of width ``sigma`` (pixels)
    on its grid, a smooth function that is turned and sampled back on the grid inside the
    disc of diameter ``k``.

    Sampling one smooth function at every angle, the unturned copy included, gives copies
    that respond alike; bilinear interpolation would blur the turned copies only (a 45
    degree copy of a random filter keeps about a third of its energy), so that the
    unturned orientations would win every orientation readout.
    """
    c = (k - 1) / 2
    cos, sin = math.cos(angle), math.sin(angle)
    grid = torch.arange(k, dtype=torch.float64) - c
    ys, xs = torch.meshgrid(grid, grid, indexing="ij")
    xs, ys = xs.flatten(), ys.flatten()
    inside = (xs**2 + ys**2) <= (k / 2) ** 2
    sx, sy = cos * xs + sin * ys, -sin * xs + cos * ys  # R^-1 p for every output pixel p
    d2 = (sx[:, None] - xs[None]) ** 2 + (sy[:, None] - ys[None]) ** 2
    m = torch.exp(-d2 / (2 * sigma**2)) / (2 * math.pi * sigma**2)
    return (m * inside[:, None]).float()


class FilterRotations(nn.Module):
    """Turns the ``g``-th of ``N`` stacked filters by ``2 pi g / N``."""

    def __init__(self, n: int, k: int):
        super().__init__()
        self.n, self.k = n, k
        self.exact = math.gcd(n, 4)  # rotations of C_N that are multiples of 90 degrees
        self.step = n // self.exact  # interpolated copies per exact turn
        mats = torch.stack([filter_rotation_matrix(k, 2 * math.pi * r / n) for r in range(self.step)])
        self.register_buffer("mats", mats, persistent=False)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """``(N, ..., k, k)`` -> the same shape, slice ``g`` turned by ``2 pi g / N``."""
        shape = w.shape
        flat = w.reshape(self.exact, self.step, -1, self.k * self.k)
        # Only the copies within a quarter turn are resampled; rot90 makes the rest exactly.
        turned = torch.einsum("qrbj,rij->qrbi", flat, self.mats).reshape(self.exact, self.step, -1, self.k, self.k)
        per_turn = 4 // self.exact
        return torch.stack([quarter_turns(turned[q], q * per_turn) for q in range(self.exact)]).reshape(shape)


class LiftingConv(nn.Module):
    """Images ``(B, C, H, W)`` -> group maps ``(B, C_out, N, H, W)``: one learned filter per
    output channel, correlated at its ``N`` rotations ("same" padding, stride 1)."""

    def __init__(self, in_channels: int, out_channels: int, n: int, k: int):
        super().__init__()
        self.n, self.out_channels = n, out_channels
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, k, k) * math.sqrt(2 / (in_channels * k * k)))
        self.rotations = FilterRotations(n, k)

    def forward(self, x: torch.Tensor, halve_after: bool = False) -> torch.Tensor:
        """With ``halve_after``, the output then passed through :func:`halve`, computed in
        one strided convolution where the side is even (the full-size maps are never made)."""
        bank = self.rotations(self.weight.expand(self.n, *self.weight.shape))  # (N, Co, Ci, k, k)
        bank = bank.transpose(0, 1).reshape(self.out_channels * self.n, *self.weight.shape[1:])
        pad = self.weight.shape[-1] // 2
        if halve_after and x.shape[-1] % 2 == 0:
            # Averaging 2x2 blocks of a correlation is a stride-2 correlation with the
            # filter box-blurred to (k + 1) x (k + 1): the same numbers, a third of the work.
            padded = F.pad(bank, (1, 1, 1, 1))
            bank = 0.25 * (padded[..., 1:, 1:] + padded[..., :-1, 1:] + padded[..., 1:, :-1] + padded[..., :-1, :-1])
            out = F.conv2d(x, bank, stride=2, padding=pad)
        else:
            out = F.conv2d(x, bank, padding=pad)
            if halve_after:
                out = halve(out.view(x.shape[0], self.out_channels, self.n, *out.shape[-2:])).flatten(1, 2)
        return out.view(x.shape[0], self.out_channels, self.n, *out.shape[-2:])


class GroupConv(nn.Module):
    """Group maps ``(B, C_in, N, H, W)`` -> ``(B, C_out, N, H, W)``: the filter of output
    rotation ``g`` is the learned filter turned by ``g`` and shifted by ``g`` along the
    input's rotation axis."""

    def __init__(self, in_channels: int, out_channels: int, n: int, k: int):
        super().__init__()
        self.n, self.out_channels = n, out_channels
        fan_in = in_channels * n * k * k
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, n, k, k) * math.sqrt(2 / fan_in))
        self.rotations = FilterRotations(n, k)
        g = torch.arange(n)
        self.register_buffer("shift", (g[None, :] - g[:, None]) % n, persistent=False)  # [g, h] = h - g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        co, ci, n, k, _ = self.weight.shape
        shifted = self.weight[:, :, self.shift].permute(2, 0, 1, 3, 4, 5)  # (N_out, Co, Ci, N_in, k, k)
        bank = self.rotations(shifted).transpose(0, 1).reshape(co * n, ci * n, k, k)
        out = F.conv2d(x.flatten(1, 2), bank, padding=k // 2)
        return out.view(x.shape[0], co, n, *out.shape[-2:])


def halve(x: torch.Tensor) -> torch.Tensor:
    """Average-pool group maps ``(B, C, N, H, W)`` to about half the side, on windows that a
    quarter turn maps onto each other: 2x2 blocks for an even side, 3x3 windows centred on
    every other pixel (first and last included) for an odd one. (A strided convolution
    on an even side would sample a grid that a quarter turn does not keep; averaging is
    also cheaper than a max pool here and aliases less under other angles.)"""
    b, c, n, h, w = x.shape
    flat = x.reshape(b, c * n, h, w)
    if h % 2 == 0:
        flat = F.avg_pool2d(flat, 2)
    else:
        flat = F.avg_pool2d(flat, 3, stride=2, padding=1, count_include_pad=False)
    return flat.view(b, c, n, *flat.shape[-2:])
