"""One epoch of training or of evaluation, with the checks that stop a run before a
non-finite loss reaches the parameters.

:class:`EpochRunner` is what the :class:`~mcvae_framework.train.trainer.Trainer` calls once per
epoch; it owns no state across epochs besides the objects it is given.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from .batching import STREAM_EVAL, derive_seed
from ..errors import TrainingError
from .run_logging import TermAverager


class EpochRunner:
    """Runs the epochs of one training run.

    :param config: the experiment config.
    :param context: the run's :class:`~mcvae_framework.runtime.distributed.DistributedContext`.
    :param device: the training device.
    :param loss_module: the :class:`~mcvae_framework.model.losses.LossModule` (evaluated bare).
    :param trained_module: the module the optimiser steps through (``loss_module``, or it
        wrapped in DistributedDataParallel).
    :param optimizer: the run's optimiser.
    :param loss_generator: the random stream of the loss's sampling.
    :param checkpoint_path: ``RUN/checkpoints/last.pt``, named when a run has to stop.
    """

    def __init__(self, config, context, device, loss_module, trained_module, optimizer,
                 loss_generator: torch.Generator, checkpoint_path: Path):
        self.config = config
        self.context = context
        self.device = device
        self.loss_module = loss_module
        self.trained_module = trained_module
        self.optimizer = optimizer
        self.loss_generator = loss_generator
        self.checkpoint_path = checkpoint_path

    @property
    def pretrain_epochs(self) -> int:
        return self.config.loss.pretrain_epochs

    @property
    def total_epochs(self) -> int:
        """Pretraining epochs plus ELBO epochs."""
        return self.pretrain_epochs + self.config.training.epochs

    def phase(self, epoch: int) -> str:
        return "pretrain" if epoch < self.pretrain_epochs else "train"

    def train_epoch(self, epoch: int, batches) -> tuple[dict[str, float], int, float]:
        """One epoch of optimisation; returns (mean terms over all processes, images, seconds)."""
        training = self.config.training
        pretrain = epoch < self.pretrain_epochs
        loss_epoch = epoch - self.pretrain_epochs  # warm-up counts ELBO epochs only
        self.trained_module.train()
        averager = TermAverager()
        steps = len(batches)
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{self.total_epochs}", leave=False, dynamic_ncols=True,
                   disable=True if not (self.context.is_main and training.progress) else None)
        start = time.perf_counter()
        try:
            for step, batch in enumerate(batches(epoch), start=1):
                try:
                    terms = self.trained_module(batch, epoch=loss_epoch, generator=self.loss_generator,
                                                pretrain=pretrain)
                except RuntimeError:
                    # e.g. binary_cross_entropy refuses NaN predictions: name the bad data if that is the cause
                    if self.nonfinite_inputs(batch):
                        raise self.nonfinite_error(epoch, step, steps, self.nonfinite_inputs(batch)) from None
                    raise
                names = list(terms)
                values = self.finite_values(terms, names, epoch, step, steps, batch)
                self.optimizer.zero_grad(set_to_none=True)
                terms["loss"].backward()
                if training.grad_clip > 0:
                    norm = nn.utils.clip_grad_norm_(self.loss_module.model.parameters(), training.grad_clip)
                    if not torch.isfinite(norm):  # identical on every process: grads are averaged
                        raise self.nonfinite_error(epoch, step, steps, ["gradient norm"])
                self.optimizer.step()
                averager.add(names, values, len(batch["image"]))
                bar.update()
                if step % training.log_every == 0 or step == steps:
                    running = {n: f"{float(averager.sums[i] / averager.count):.4g}" for i, n in enumerate(averager.names)}
                    bar.set_postfix({"loss": running.pop("loss", "?"), **running}, refresh=False)
        finally:
            bar.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        means, n_images = averager.means(self.context, self.device)
        return means, n_images, seconds

    def evaluate(self, epoch: int, batches) -> dict[str, float]:
        """Mean loss terms on the test split (eval mode, no gradients, fixed noise)."""
        pretrain = epoch < self.pretrain_epochs
        generator = torch.Generator(device=self.device)
        generator.manual_seed(derive_seed(self.config.training.seed, STREAM_EVAL, self.context.rank))
        averager = TermAverager()
        self.loss_module.eval()
        try:
            with torch.no_grad():
                for batch in batches(epoch):
                    # the bare module: evaluation needs no gradient synchronisation
                    terms = self.loss_module(batch, epoch=epoch - self.pretrain_epochs, generator=generator,
                                             pretrain=pretrain)
                    names = list(terms)
                    values = torch.stack([terms[n].detach().reshape(()).to(torch.float64) for n in names]).cpu()
                    averager.add(names, values, len(batch["image"]))
        finally:
            self.loss_module.train()
        means, _ = averager.means(self.context, self.device)
        return means

    @staticmethod
    def nonfinite_inputs(batch: dict[str, torch.Tensor]) -> list[str]:
        return [f"input {key!r} holds NaN/inf" for key, value in batch.items()
                if value.is_floating_point() and not bool(torch.isfinite(value).all())]

    def finite_values(self, terms: dict[str, torch.Tensor], names: list[str], epoch: int, step: int,
                      steps: int, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The step's term values on the CPU; stops training (on every process at once)
        before a non-finite loss can reach the parameters."""
        values = torch.stack([terms[name].detach().reshape(()).to(torch.float64) for name in names])
        bad = (~torch.isfinite(values)).to(torch.float64)
        if self.context.enabled:  # every process must stop at the same step, or the others hang
            self.context.all_reduce_sum(bad)
        bad = bad.cpu()
        if bool(bad.any()):
            local = values.cpu()
            raise self.nonfinite_error(
                epoch, step, steps,
                [f"{name} = {float(local[i])}" if not math.isfinite(float(local[i])) else f"{name} (on another process)"
                 for i, name in enumerate(names) if bad[i] > 0] + self.nonfinite_inputs(batch),
            )
        return values.cpu()

    def nonfinite_error(self, epoch: int, step: int, steps: int, what: list[str]) -> TrainingError:
        # the epochs before this one are done and checkpointed: their count is `epoch`
        return TrainingError(
            f"training stopped: non-finite value at epoch {epoch + 1} of {self.total_epochs}, step {step} of {steps} "
            f"({self.phase(epoch)} phase): {', '.join(what)}. No checkpoint was written after this step; the last "
            f"good checkpoint (epoch {epoch}) is {self.checkpoint_path}. Check the data for NaN/inf "
            "values, or lower training.lr / set training.grad_clip, then --resume or start afresh."
        )


__all__ = ["EpochRunner"]
