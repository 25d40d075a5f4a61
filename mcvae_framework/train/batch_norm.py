"""Batch-norm statistics of plain images, recomputed after every epoch.

In training a batch-norm layer normalises every pass by that pass's own statistics, and
keeps running averages of them for evaluation. The passes of an MCE-VAE are not alike: the
images themselves, their moved copies for the invariance terms (four times as many), the
self-labelling term's moved copies. The running averages mix them all, and an image is
then normalised in evaluation as no training pass normalised it. On large sets of digits
this costs nothing measurable (mirrored digits: test accuracy within 0.006 either way); on a
folder of a few hundred shapes it decides the result: a model whose clusters agreed with
its graph on 100% of the images under the statistics of a plain batch agreed on 95% under
the running averages (test accuracy 0.940 against 1.000), and the graph checks
(``train/graph_check``) read the latter.

So after every epoch the running statistics are recomputed from one plain pass over a fixed
sample of the training images (``training.batch_norm_images``), with
:func:`torch.optim.swa_utils.update_bn` (an exact average over the pass, not a moving one).
The pass draws no random numbers (posterior means), so a resumed run stays exact.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from .batching import STREAM_EVAL, derive_seed, sample_indices


class _PlainPass(nn.Module):
    """The model's forward pass at the posterior means: every layer an evaluation uses."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor):
        return self.model(images, sample=False)


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def recalibrate_batch_norm(model: nn.Module, images: torch.Tensor, device, batch_size: int) -> None:
    """Recompute every batch-norm layer's running mean and variance from ``images`` (one
    plain pass in training mode, without gradients; the model's mode is put back)."""
    batches = [images[start:start + batch_size] for start in range(0, len(images), batch_size)]
    plain = _PlainPass(model).train(model.training)  # update_bn puts the wrapper's mode back, and so the model's
    update_bn(batches, plain, device=device)


def recalibrate_after_epoch(model: nn.Module, training, n_images: int, training_images, device) -> None:
    """After an epoch: :func:`recalibrate_batch_norm` on ``training.batch_norm_images`` of the
    ``n_images`` training images (``training_images(indices)`` reads them), the same sample
    every epoch (the first of the sample :meth:`~mcvae_framework.train.guidance.ClusterGuidance.sample_latents`
    reads); nothing when that is 0 or the model has no batch norm."""
    if training.batch_norm_images and has_batch_norm(model):
        generator = torch.Generator().manual_seed(derive_seed(training.seed, STREAM_EVAL))
        pick = sample_indices(n_images, training.batch_norm_images, generator)
        recalibrate_batch_norm(model, training_images(pick), device, training.eval_batch_size)


__all__ = ["has_batch_norm", "recalibrate_after_epoch", "recalibrate_batch_norm"]
