"""The trainer: builds a run from its config and drives its epochs.

A run writes one folder (``training.out_dir``; its layout is
:mod:`mcvae_framework.runtime.run_layout`): ``config.json``, ``metrics.csv``, ``train.log``,
``checkpoints/`` and, if asked, ``tensorboard/``. From Python::

    from mcvae_framework.train.trainer import train, load_trained_model
    run_dir = train("configs/quickstart.yaml")
    config, model = load_trained_model(run_dir)

The parts, one module each: :mod:`~mcvae_framework.train.batching` (seeds, random streams, batch
sources), :mod:`~mcvae_framework.train.epochs` (one epoch of training or evaluation),
:mod:`~mcvae_framework.train.guidance` (prior warm start, invariant graph, self-labelling),
:mod:`~mcvae_framework.train.run_folder` (checkpoints, resume) and
:mod:`~mcvae_framework.train.run_logging` (metrics, log, TensorBoard). Under ``torchrun
--nproc_per_node N`` the same code trains with DistributedDataParallel: each process reads
its shard of every epoch's permutation, metrics are summed over processes, and only rank 0
writes files.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from ..runtime.acceleration import configure_acceleration, optimizer_options
from .batching import (  # noqa: F401  (re-exported: scripts and benchmarks import them from here)
    STREAM_DATA,
    STREAM_EVAL,
    STREAM_LOSS,
    STREAM_REFINE,
    STREAM_WORKERS,
    LoaderBatches,
    MemoryBatches,
    derive_seed,
    make_batches,
    seed_everything,
)
from ..config.components import build
from ..runtime.checkpoint import capture_rng_state, package_versions, restore_rng_state
from ..config.data_size import check_data_size
from ..config.experiment import check_dataset_fits, config_to_dict, load_config, validate_config
from ..runtime.data import UnlabelledUnion
from ..runtime.distributed import DistributedContext, resolve_device, wrap_for_training
from ..runtime.run_layout import RunLayout
from .batch_norm import recalibrate_after_epoch
from .epochs import EpochRunner
from ..errors import ConfigError, McvaeError, RunFolderError, TrainingError
from .guidance import ClusterGuidance
from ..report.inference import load_trained_model
from ..model.likelihood import estimate_noise_std
from ..model.losses import LossModule
from ..model.mcevae import build_model
from .run_folder import RunFolder
from .run_logging import RunLog, TensorBoardLog, epoch_line, epochs_line, write_metrics_csv

log = logging.getLogger("mcvae_framework.train.trainer")


class TrainingInterrupted(TrainingError):
    """Ctrl-C: the checkpoint of the last finished epoch is on disk; ``--resume`` goes on."""

    exit_code = 130


def naming_the_file(error: Exception, source: str) -> Exception:
    """``error``, or for a :class:`ConfigError` that names no file (a component's factory knows
    the field, not the file it came from) the same problems under ``source``."""
    if isinstance(error, ConfigError) and not error.source:
        return ConfigError(error.problems, source)
    return error


def make_optimizer(parameters, training, device: torch.device | None = None) -> torch.optim.Optimizer:
    """The optimiser named by ``training.optimizer`` (adam, adamw, sgd); Adam's fused kernel on CUDA."""
    parameters = list(parameters)
    fused = optimizer_options(device) if device is not None else {}
    if training.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=training.lr, weight_decay=training.weight_decay, **fused)
    if training.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=training.lr, weight_decay=training.weight_decay, **fused)
    return torch.optim.SGD(parameters, lr=training.lr, momentum=training.momentum, weight_decay=training.weight_decay)


def make_scheduler(optimizer, training, total_epochs: int):
    """The per-epoch learning-rate schedule named by ``training.scheduler`` (or ``None``)."""
    if training.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_epochs, 1), eta_min=training.min_lr)
    if training.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=training.lr_step_size, gamma=training.lr_gamma)
    return None


class Trainer:
    """Trains an MCE-VAE from an experiment config and writes its run folder.

    :param config: a validated experiment config, a config dict, or a config file path.
    :param resume: continue from ``RUN/checkpoints/last.pt`` (same run folder; from
        ``previous.pt`` when ``last.pt`` is damaged).
    :param overwrite: start afresh in a run folder that already holds a run.
    :param out_dir: the run folder; overrides ``training.out_dir``.
    :param train_dataset: use this dataset instead of ``build("data", ..., split="train")``.
    :param test_dataset: use this dataset instead of ``build("data", ..., split="test")``.
    :param console: also log to the console (rank 0 only).
    :param source: the config file, named by a :class:`~mcvae_framework.errors.ConfigError`
        raised while the run is built (a component's factory, too few images).

    After :meth:`run`: ``model`` (the trained :class:`~mcvae_framework.model.mcevae.MCEVAE`),
    ``history`` (the metrics rows) and ``summary`` (wall time, images per second).
    """

    def __init__(self, config, *, resume: bool = False, overwrite: bool = False, out_dir: str | Path | None = None,
                 train_dataset=None, test_dataset=None, console: bool = True, source: str | None = None):
        if isinstance(config, (str, Path)):
            source = source or str(config)
            config = load_config(config)
        elif isinstance(config, dict):
            config = validate_config(config)
        if out_dir is not None:
            config = config.model_copy(update={"training": config.training.model_copy(update={"out_dir": str(out_dir)})})
        self.config = config
        self.config_dict = config_to_dict(config)
        self.resume = resume
        self.overwrite = overwrite
        self.run_dir = Path(config.training.out_dir)
        self.layout = RunLayout(self.run_dir)
        self.train_dataset = train_dataset
        self.test_dataset = test_dataset
        self.console = console
        self.source = source
        self.history: list[dict[str, Any]] = []
        self.epochs_done = 0
        self.summary: dict[str, Any] = {}
        self.model = None
        #: prior warm start, invariant graph, self-labelling (a ClusterGuidance, once built).
        self.guidance: ClusterGuidance | None = None
        self.run_log = RunLog()
        self.tensorboard: TensorBoardLog | None = None

    @property
    def checkpoint_path(self) -> Path:
        return self.layout.last

    @property
    def graph(self):
        """The invariant graph of the training images (``graph.enabled``), or ``None``."""
        return self.guidance.graph if self.guidance is not None else None

    # ------------------------------------------------------------------ entry point

    def run(self) -> Path:
        """Train for ``loss.pretrain_epochs + training.epochs`` epochs (from the last checkpoint when
        resuming); returns the run folder.

        :raises McvaeError: a TrainingError (non-finite loss; TrainingInterrupted on Ctrl-C, the last
            finished epoch kept), RunFolderError (the folder's rules, no readable checkpoint) or ConfigError.
        """
        self.context = DistributedContext.from_env()
        self.device = resolve_device(self.config.training.device, self.context)
        self.context.setup(self.device)
        self.folder = RunFolder(self.run_dir, self.context, self.config.training)
        threads = torch.get_num_threads()
        if self.config.training.num_threads:
            torch.set_num_threads(self.config.training.num_threads)
        try:
            self._build_data()  # before the run folder is made: too few images leave no folder behind
            self.folder.prepare(self.config_dict, resume=self.resume, overwrite=self.overwrite,
                                open_log=lambda: self.run_log.open(self.layout.log, self.console))
            self._build()
            if self.resume:
                self._restore()
            if self.config.graph.enabled and self.graph is None:
                self.guidance.start_graph(fresh=not self.resume)
            if not self.resume:
                self._save_checkpoint()  # epoch 0: an interruption in epoch 1 still resumes
            self._train()
        except KeyboardInterrupt:
            if not self.checkpoint_path.exists():
                error = TrainingInterrupted("training interrupted before its first checkpoint; nothing to resume")
            else:
                error = TrainingInterrupted(
                    f"training interrupted during epoch {self.epochs_done + 1}; the checkpoint of the last "
                    f"finished epoch ({self.epochs_done}) is {self.checkpoint_path}. Continue with "
                    "`mcvae train CONFIG --resume` (same config and --out-dir)."
                )
            self.run_log.record_error(error)
            raise error from None
        except McvaeError as error:
            error = naming_the_file(error, self.source or str(self.layout.config))
            self.run_log.record_error(error)
            raise error from None
        finally:
            torch.set_num_threads(threads)
            self.run_log.close()
            self.context.close()
        return self.run_dir

    # ------------------------------------------------------------------ set-up

    def _build_data(self) -> None:
        """The datasets, and the checks that need them (canonical images, enough images)."""
        cfg, training = self.config, self.config.training
        seed_everything(training.seed)
        train_data = self.train_dataset if self.train_dataset is not None else build("data", cfg.data, split="train")
        test_data = self.test_dataset
        if test_data is None and (training.eval_every or training.transductive):
            test_data = build("data", cfg.data, split="test")
        check_dataset_fits(cfg, train_data)  # supervised mode: a clear message now, not a KeyError at step 1
        if training.transductive:
            # the test images join training without labels; evaluation still scores the test split
            train_data = UnlabelledUnion(train_data, test_data)
        check_data_size(cfg, n_train=len(train_data))
        self.train_data, self.test_data = train_data, test_data

    def _build(self) -> None:
        cfg, training = self.config, self.config.training
        train_data, test_data = self.train_data, self.test_data
        self.image_shape = tuple(int(s) for s in train_data.image_shape)
        self.model = build_model(cfg, image_shape=self.image_shape).to(self.device)
        configure_acceleration(self.model, training)
        self.loss_module = LossModule(self.model, cfg.loss)
        self.trained_module = wrap_for_training(self.loss_module, self.context, self.device)
        self.optimizer = make_optimizer(self.model.parameters(), training, self.device)
        # The trainer's own stream for the loss's sampling; distinct per process.
        self.loss_generator = torch.Generator(device=self.device)
        self.loss_generator.manual_seed(derive_seed(training.seed, STREAM_LOSS, self.context.rank))
        self.train_batches = make_batches(
            train_data, training.batch_size, shuffle=True, drop_last=True, seed=training.seed,
            context=self.context, device=self.device, num_workers=training.num_workers,
            with_index=cfg.graph.enabled, min_steps=training.min_steps_per_epoch,
        )
        if len(self.train_batches) == 0:
            raise TrainingError(f"the training split of {cfg.data.type!r} is empty: nothing to train on")
        self.test_batches = None
        if test_data is not None and len(test_data) > 0:
            self.test_batches = make_batches(
                test_data, training.eval_batch_size, shuffle=False, drop_last=False, seed=training.seed,
                context=self.context, device=self.device, num_workers=training.num_workers,
            )
        self.guidance = ClusterGuidance(cfg, self.context, self.device, self.model, self.loss_module, train_data,
                                        self.train_batches, self.optimizer)
        self.epochs = EpochRunner(cfg, self.context, self.device, self.loss_module, self.trained_module,
                                  self.optimizer, self.loss_generator, self.checkpoint_path)
        self.scheduler = make_scheduler(self.optimizer, training, self.epochs.total_epochs)
        log.info("%s", run_line(self, cfg))
        if self.model.noise_std is not None and not self.resume:  # loss.gaussian_std: auto (a resumed run keeps its)
            self.model.noise_std.fill_(estimate_noise_std(self.guidance.training_images(torch.arange(
                min(len(train_data), 1000)))))
            log.info("loss.gaussian_std: auto: noise level %.4f, estimated from the training images",
                     float(self.model.noise_std))

    def _restore(self) -> None:
        checkpoint, path = self.folder.read_resume_checkpoint(self.config_dict, self.image_shape)
        try:
            self.model.load_state_dict(checkpoint["model"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            if self.scheduler is not None and checkpoint.get("scheduler") is not None:
                self.scheduler.load_state_dict(checkpoint["scheduler"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise RunFolderError(f"cannot resume from {path}: its state does not fit the model the config builds "
                                 f"({str(exc).splitlines()[0]}). Resume with the run's own config "
                                 f"({self.layout.config}) or start a fresh run in another --out-dir.") from None
        self.history = list(checkpoint["metrics"])
        self.epochs_done = int(checkpoint["epoch"])
        self.guidance.load_state_dict(checkpoint)
        states = checkpoint["rng"]
        restore_rng_state(states[min(self.context.rank, len(states) - 1)], {"loss": self.loss_generator})
        if len(states) != self.context.world_size:
            log.warning("resuming %d-process checkpoint with %d processes: loss noise is reseeded",
                        len(states), self.context.world_size)
            self.loss_generator.manual_seed(
                derive_seed(self.config.training.seed, STREAM_LOSS, self.context.rank, self.epochs_done))
        log.info("resumed from %s after epoch %d of %d", path, self.epochs_done,
                 self.epochs.total_epochs)

    def _save_checkpoint(self) -> None:
        """``checkpoints/last.pt`` (and ``best.pt``, ``epoch_NNNN.pt``: see
        :meth:`RunFolder.write_checkpoint`) for the epochs finished so far; every process's
        RNG states go in, so that a resumed DDP run draws what an uninterrupted one would."""
        rng_states = self.context.all_gather_objects(capture_rng_state({"loss": self.loss_generator}))
        if not self.context.is_main:
            return
        self.folder.write_checkpoint({
            "epoch": self.epochs_done,
            "config": self.config_dict,
            "image_shape": list(self.image_shape),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": rng_states,
            "metrics": self.history,
            "versions": package_versions(),
            "world_size": self.context.world_size,
            **self.guidance.state_dict(),
        })

    # ------------------------------------------------------------------ the loop

    def _train(self) -> None:
        log.info("%s", epochs_line(self.epochs.pretrain_epochs, self.config.training.epochs, self.epochs_done))
        if self.config.training.tensorboard:
            self.tensorboard = TensorBoardLog.open(self.run_dir, self.context, self.model, self.resume,
                                                   self.test_batches if self.test_batches is not None
                                                   else self.train_batches)
        if self.epochs_done >= self.epochs.total_epochs:
            log.info("nothing to do: the run already finished its %d epochs", self.epochs.total_epochs)
        wall_start = time.perf_counter()
        images = 0
        train_seconds = 0.0
        for epoch in range(self.epochs_done, self.epochs.total_epochs):
            lr = self.optimizer.param_groups[0]["lr"]
            train_terms, n_images, seconds = self.epochs.train_epoch(epoch, self.train_batches)
            # what reads the model in evaluation mode next normalises an image as training did
            recalibrate_after_epoch(self.model, self.config.training, len(self.train_data),
                                    self.guidance.training_images, self.device)
            if epoch + 1 == self.epochs.pretrain_epochs:
                self.guidance.fit_prior()
            elif epoch >= self.epochs.pretrain_epochs and self.config.loss.reseed_below > 0:
                train_terms["reseeded_components"] = float(self.guidance.reseed_small_components(epoch))
            if self.guidance.relabels(epoch):
                train_terms["relabel_changed"] = self.guidance.relabel(epoch)
            self.guidance.keep_graph(epoch, self.epochs)
            if self.scheduler is not None:
                self.scheduler.step()
            test_terms = self.epochs.evaluate(epoch, self.test_batches) if self._evaluates(epoch) else {}
            images += n_images
            train_seconds += seconds
            row = {"epoch": epoch + 1, "phase": self.epochs.phase(epoch), "seconds": seconds,
                   "images_per_second": n_images / max(seconds, 1e-9), "lr": lr}
            row.update({f"train_{k}": v for k, v in train_terms.items()})
            row.update({f"test_{k}": v for k, v in test_terms.items()})
            self.history.append(row)
            self.epochs_done = epoch + 1
            self._save_checkpoint()
            if self.context.is_main:
                write_metrics_csv(self.layout.metrics, self.history)
            if self.tensorboard is not None:
                self.tensorboard.add_row(row)
            log.info("%s", epoch_line(row, self.epochs.total_epochs, train_terms, test_terms))
        wall = time.perf_counter() - wall_start
        self.summary = {"epochs": self.epochs_done, "wall_seconds": wall, "train_images": images,
                        "images_per_second": images / train_seconds if train_seconds else float("nan")}
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None
        if images:  # the run folder was named in the first line (and `mcvae train` prints it once more)
            log.info("finished %d epochs in %.1f s (%.0f training images/s)", self.epochs_done,
                     wall, self.summary["images_per_second"])

    def _evaluates(self, epoch: int) -> bool:
        every = self.config.training.eval_every
        last = epoch + 1 == self.epochs.total_epochs
        return bool(self.test_batches is not None and every and ((epoch + 1) % every == 0 or last))


def run_line(trainer, cfg) -> str:
    """The run's first line in ``train.log``: folder, data, parameters, device."""
    test_data = trainer.test_data
    return (f"run folder {trainer.run_dir} | data {cfg.data.type}: {len(trainer.train_data)} train / "
            f"{len(test_data) if test_data is not None else 0} test images of shape {trainer.image_shape} | "
            f"{sum(p.numel() for p in trainer.model.parameters())} parameters | device {trainer.device}"
            + (f" x {trainer.context.world_size} processes" if trainer.context.enabled else ""))


def train(config, resume: bool = False, **options) -> Path:
    """Train from a config (object, dict or file path); returns the run folder.

    :param resume: continue the run in ``training.out_dir`` from its last checkpoint.
    :param options: further :class:`Trainer` keyword arguments (``out_dir``, ``overwrite``, ...).
    """
    return Trainer(config, resume=resume, **options).run()


__all__ = [
    "LossModule",
    "Trainer",
    "TrainingInterrupted",
    "load_trained_model",
    "make_optimizer",
    "make_scheduler",
    "train",
]
