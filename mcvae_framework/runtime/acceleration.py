"""The fast-step options of ``training``: bfloat16 autocast and ``torch.compile`` of the networks.

Only the encoder and decoder are touched, for two reasons. They hold the matrix work, the
part that gains from bf16 units and fused kernels. And everything around them is where
bf16 or a compiled graph would do harm: the posteriors' log-variances, the group's
exponential map and the Bernoulli log-likelihood need float32 (a pixel probability
rounded to 1 in bf16 gives an infinite loss), and the trainer's random streams (poses,
noise, moved copies) stay outside any compiled graph, so a compiled run draws exactly
what an eager one draws.
"""

from __future__ import annotations

import torch

NETWORK_DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def configure_acceleration(model, training) -> None:
    """Apply ``training.precision`` and ``training.compile`` to ``model``'s networks, in place.

    ``nn.Module.compile`` compiles in place, so parameter names, checkpoints and
    DistributedDataParallel wrapping are the same as an eager model's.
    """
    model.network_dtype = NETWORK_DTYPES[training.precision]
    if training.compile != "none":
        for network in (model.encoder, model.decoder):
            network.compile(mode=training.compile)


def optimizer_options(device: torch.device) -> dict:
    """Keyword arguments for Adam/AdamW on ``device``: the fused CUDA kernel updates every
    parameter in one launch instead of several per parameter tensor."""
    return {"fused": True} if device.type == "cuda" else {}


__all__ = ["NETWORK_DTYPES", "configure_acceleration", "optimizer_options"]
