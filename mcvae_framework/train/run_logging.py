"""What a run writes while it trains, besides checkpoints: ``metrics.csv``, ``train.log``
and the optional TensorBoard event files.

:class:`TermAverager` turns per-step loss terms into the epoch means of a metrics row,
:func:`write_metrics_csv` rewrites ``metrics.csv`` atomically, :class:`RunLog` attaches the
log file and the console (through :class:`ProgressLogHandler`, which does not tear the
progress bar) to the trainer's logger, :class:`TensorBoardLog` mirrors each metrics row
into ``RUN/tensorboard``. The run folder's paths and the resume rules are in
:mod:`mcvae_framework.runtime.run_layout`.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..runtime.checkpoint import atomic_write_text
from ..runtime.distributed import DistributedContext
from ..runtime.run_layout import RunLayout
from ..errors import ConfigError
from ..report.inference import predict_images

#: the trainer's logger: ``train.log`` and the console get its records.
log = logging.getLogger("mcvae_framework.train.trainer")



class TermAverager:
    """Image-weighted means of the loss terms over an epoch, summed across processes."""

    def __init__(self):
        self.names: list[str] | None = None
        self.sums: torch.Tensor | None = None
        self.count = 0

    def add(self, names: list[str], values: torch.Tensor, n_images: int) -> None:
        """``values``: one CPU float per name, each a mean over ``n_images`` images."""
        if self.names is None:
            self.names, self.sums = list(names), torch.zeros(len(names), dtype=torch.float64)
        self.sums += values.to(torch.float64) * n_images
        self.count += n_images

    def means(self, context: DistributedContext, device: torch.device) -> tuple[dict[str, float], int]:
        """``({term: mean}, total images)`` over every process."""
        if self.names is None:
            return {}, 0
        # nccl reduces CUDA tensors only; gloo CPU ones: reduce on the training device
        packed = torch.cat([self.sums, torch.tensor([float(self.count)], dtype=torch.float64)])
        packed = context.all_reduce_sum(packed.to(device)).cpu()
        total = int(packed[-1].item())
        return {name: float(packed[i] / max(total, 1)) for i, name in enumerate(self.names)}, total


def write_metrics_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite ``metrics.csv`` atomically from all rows (columns: union, first-seen order;
    pretraining and ELBO epochs report different terms)."""
    seen: list[str] = []
    for row in rows:
        seen += [key for key in row if key not in seen]
    # fixed columns first, then every train_ term, then every test_ term
    rank = {"train_": 1, "test_": 2}
    columns = sorted(seen, key=lambda key: rank.get(key[: key.find("_") + 1], 0))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: (f"{value:.6g}" if isinstance(value, float) else value) for key, value in row.items()})
    atomic_write_text(path, buffer.getvalue())


def epochs_line(pretrain_epochs: int, epochs: int, done: int) -> str:
    """What the run will do, in the words of the config: ``loss.pretrain_epochs`` of
    pretraining, then ``training.epochs`` of ELBO training (and how far it got)."""
    total = pretrain_epochs + epochs
    line = (f"{pretrain_epochs} pretraining + {epochs} training epochs "
            f"({total} in all: loss.pretrain_epochs + training.epochs)")
    if done:
        line += f"; {done} done, {max(total - done, 0)} to go"
    return line


def epoch_line(row: dict[str, Any], total_epochs: int, train_terms: dict, test_terms: dict) -> str:
    """The log line of one finished epoch."""
    parts = [f"epoch {row['epoch']}/{total_epochs} ({row['phase']})",
             f"{row['seconds']:.1f} s", f"{row['images_per_second']:.0f} img/s",
             f"train loss {train_terms.get('loss', float('nan')):.4g}"]
    if test_terms:
        parts.append(f"test loss {test_terms.get('loss', float('nan')):.4g}")
    return " | ".join(parts)


class ProgressLogHandler(logging.Handler):
    """Console log lines that do not tear the progress bar."""

    def emit(self, record):
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


def enable_package_loggers() -> None:
    """Switch the framework's own loggers back on. ``logging.config`` with
    ``disable_existing_loggers`` (the default of ``dictConfig`` and ``fileConfig``) silences
    every logger created before it: importing ASPIRE does that, and a run started after it in
    the same process (a notebook that simulates particles first) wrote an empty train.log."""
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and name.split(".")[0] == "mcvae_framework":
            logger.disabled = False


class RunLog:
    """``RUN/train.log`` (appended to) and, with ``console``, the console, attached to the
    trainer's logger while a run lasts; the records do not reach the root logger meanwhile."""

    def __init__(self):
        self._handlers: list[logging.Handler] = []
        self._propagate = log.propagate

    def open(self, path: Path, console: bool) -> None:
        log.setLevel(logging.INFO)
        enable_package_loggers()
        file_handler = logging.FileHandler(path, mode="a", encoding="utf-8")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self._handlers.append(file_handler)
        if console:
            console_handler = ProgressLogHandler()
            console_handler.setFormatter(logging.Formatter("%(message)s"))
            self._handlers.append(console_handler)
        for handler in self._handlers:
            log.addHandler(handler)
        self._propagate, log.propagate = log.propagate, False

    def record_error(self, error: Exception) -> None:
        """Record why training stopped in train.log (the console gets it from the caller)."""
        record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "%s", (error,), None)
        for handler in self._handlers:
            if isinstance(handler, logging.FileHandler):
                handler.handle(record)

    def close(self) -> None:
        for handler in self._handlers:
            log.removeHandler(handler)
            handler.close()
        if self._handlers:
            log.propagate = self._propagate
        self._handlers = []


class TensorBoardLog:
    """``RUN/tensorboard`` event files when ``training.tensorboard`` is on (rank 0 writes).

    :param folder: ``RUN/tensorboard``; emptied first unless the run resumes.
    :param model: the model whose reconstructions each epoch shows.
    :param images: the few (test) images shown every epoch.
    """

    def __init__(self, folder: Path, model, images: torch.Tensor, *, resume: bool):
        # torch's SummaryWriter needs the tensorboard package, an optional dependency:
        # imported only when a run asks for event files.
        from torch.utils.tensorboard import SummaryWriter

        if not resume and folder.is_dir():
            shutil.rmtree(folder)  # a fresh run: no curves of an overwritten one
        self.model = model
        self.images = images
        self.writer = SummaryWriter(log_dir=str(folder))

    @classmethod
    def open(cls, run_dir: Path, context: DistributedContext, model, resume: bool, batches):
        """The event files of a run (``None`` off rank 0), showing the first 8 images of
        ``batches`` every epoch. The package is checked on every process, so that all stop
        together when it is missing: a :class:`ConfigError`."""
        try:
            import torch.utils.tensorboard  # noqa: F401  (optional dependency: only checked here)
        except ImportError:
            raise ConfigError([("training.tensorboard", "true needs the tensorboard package: `pip install "
                                "tensorboard` (or `pip install 'mcvae-framework[tensorboard]'`), or set "
                                "training.tensorboard: false")], str(RunLayout(run_dir).config)) from None
        if not context.is_main:
            return None
        first = next(iter(batches.with_options(shuffle=False, drop_last=False, rank=0, world_size=1,
                                               batch_size=8)(0)))
        return cls(RunLayout(run_dir).tensorboard, model, first["image"][:8].detach().cpu(), resume=resume)

    def add_row(self, row: dict[str, Any]) -> None:
        """One epoch's row: every loss term (train and test in one chart per term), images/s,
        the learning rate, and a grid of the same test images, their reconstructions and
        canonical reconstructions."""
        step = int(row["epoch"])
        for key, value in row.items():
            if key.startswith(("train_", "test_")) and isinstance(value, (int, float)) and math.isfinite(value):
                split, term = key.split("_", 1)
                self.writer.add_scalar(f"{term}/{split}", value, step)
        self.writer.add_scalar("speed/images_per_second", row["images_per_second"], step)
        self.writer.add_scalar("optimizer/lr", row["lr"], step)
        self.writer.add_image("reconstructions (input, reconstruction, canonical)", self.reconstruction_grid(),
                              step)
        self.writer.flush()

    @torch.no_grad()
    def reconstruction_grid(self) -> torch.Tensor:
        images = self.images
        was_training = self.model.training
        try:
            out = predict_images(self.model, images, batch_size=len(images))
        finally:
            self.model.train(was_training)
        rows = torch.cat([images, out["reconstruction"].float(), out["canonical"].float()]).clamp(0, 1)
        from torchvision.utils import make_grid  # only TensorBoard runs need torchvision: not at start-up

        return make_grid(rows, nrow=len(images), padding=2, pad_value=1.0)

    def close(self) -> None:
        self.writer.close()


__all__ = [
    "epoch_line",
    "epochs_line",
    "ProgressLogHandler",
    "RunLog",
    "TensorBoardLog",
    "TermAverager",
    "write_metrics_csv",
]
