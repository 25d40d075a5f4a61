"""The trainer: seeding, batching, optimisation, progress, logging, checkpoints, resume, DDP.

A run writes one folder (``training.out_dir``)::

    RUN/config.json            the resolved config
    RUN/metrics.csv            one row per epoch: epoch, phase, seconds, images_per_second,
                               lr, train_<term>..., test_<term>...
    RUN/train.log              the log (also shown on the console)
    RUN/checkpoints/last.pt    written atomically after every epoch (and once before the first)
    RUN/checkpoints/best.pt    the ELBO epoch with the lowest ``training.best_metric`` so far
    RUN/checkpoints/epoch_NNNN.pt  every ``training.checkpoint_every`` epochs, if asked
    RUN/tensorboard/           event files, with ``training.tensorboard: true``

From Python::

    from mcvae_framework.training import train, load_trained_model
    run_dir = train("configs/quickstart.yaml")
    config, model = load_trained_model(run_dir)

Under ``torchrun --nproc_per_node N`` the same code trains with DistributedDataParallel:
each process reads its shard of every epoch's permutation, metrics are summed over
processes, and only rank 0 writes files.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from sklearn.cluster import KMeans
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .build import build
from .checkpoint import (
    atomic_write_text,
    capture_rng_state,
    load_checkpoint,
    package_versions,
    restore_rng_state,
    save_checkpoint,
)
from .config import config_to_dict, load_config, validate_config
from .distributed import DistributedContext, LossModule, resolve_device, wrap_for_training
from .errors import TrainingError
from .invariant_graph import GraphClusters, central_members, invariant_graph_clusters
from .refinement import refine_labels

log = logging.getLogger("mcvae_framework.training")

#: independent random streams derived from ``training.seed`` (see :func:`derive_seed`).
STREAM_DATA, STREAM_LOSS, STREAM_EVAL, STREAM_WORKERS, STREAM_REFINE = 1, 2, 3, 4, 5

#: config fields a resumed run must share with its checkpoint: they shape the parameters
#: or the optimiser state that gets loaded.
RESUME_MUST_MATCH = ("model", "group", "encoder", "decoder", "prior", "training.optimizer", "training.scheduler")


class TrainingInterrupted(TrainingError):
    """Ctrl-C: the checkpoint of the last finished epoch is on disk; ``--resume`` goes on."""

    exit_code = 130


def derive_seed(*parts: int) -> int:
    """A 63-bit seed for one random stream, mixed from ``training.seed`` and stream ids
    (so the data order, the loss noise and the evaluation noise never share a sequence)."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global RNG and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ===================================================================== batching


@dataclasses.dataclass(kw_only=True)
class BatchPlan:
    """What every batch source shares: batch size, order, sharding and target device."""

    batch_size: int
    shuffle: bool
    drop_last: bool
    seed: int
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    #: repeat the shuffled order (fresh permutations) until an epoch has this many steps.
    min_steps: int = 0

    def epoch_order(self, n: int, epoch: int) -> torch.Tensor:
        """This process's indices of ``n`` items for ``epoch``, in order.

        The order of epoch ``e`` is a permutation seeded by ``(seed, e)``; under DDP each
        process takes every ``world_size``-th index of it, padded like ``DistributedSampler``
        so that all processes run the same number of steps.
        """
        if self.shuffle:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, STREAM_DATA, epoch))
            order = torch.randperm(n, generator=generator)
            wanted = self.min_steps * self.batch_size * self.world_size
            while len(order) < wanted:
                order = torch.cat([order, torch.randperm(n, generator=generator)])
        else:
            order = torch.arange(n)
        if self.world_size == 1:
            return order
        if not self.shuffle:
            return order[self.rank::self.world_size]  # evaluation: exact shards, no repeats
        total = math.ceil(n / self.world_size) * self.world_size
        padded = order.repeat(math.ceil(total / n))[:total]
        return padded[self.rank:total:self.world_size]

    def _chunks(self, count: int) -> list[tuple[int, int]]:
        full, rest = divmod(count, self.batch_size)
        # Drop a trailing partial batch only when there is a full one: a batch of one
        # image breaks batch statistics, but a tiny dataset must still train.
        keep_rest = rest and not (self.drop_last and full)
        return [(i * self.batch_size, self.batch_size) for i in range(full)] + (
            [(full * self.batch_size, rest)] if keep_rest else []
        )


@dataclasses.dataclass(kw_only=True)
class MemoryBatches(BatchPlan):
    """Batches sliced straight from stacked in-memory tensors (``dataset.as_tensors()``),
    in the order of :meth:`BatchPlan.epoch_order`."""

    tensors: dict[str, torch.Tensor]

    @property
    def size(self) -> int:
        return len(next(iter(self.tensors.values())))

    def indices(self, epoch: int) -> torch.Tensor:
        return self.epoch_order(self.size, epoch)

    def __len__(self) -> int:
        return len(self._chunks(len(self.indices(0))))

    def __call__(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        order = self.indices(epoch)
        for start, length in self._chunks(len(order)):
            index = order[start:start + length]
            yield {
                key: value[index.to(value.device)].to(self.device, non_blocking=True)
                for key, value in self.tensors.items()
            }

    def with_options(self, **changes) -> "MemoryBatches":
        """The same tensors batched differently (e.g. unshuffled, one process)."""
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(kw_only=True)
class LoaderBatches(BatchPlan):
    """Batches through a ``DataLoader``, for datasets not held in memory (streaming ones).

    The batches hold the indices :class:`MemoryBatches` would cut (the same order per
    epoch, the same DDP shards), so a streamed run sees what a run in memory sees. A
    dataset with ``__getitems__`` reads each batch in one call. ``num_workers`` worker
    processes read ahead (``prefetch_factor`` batches each) and live across epochs; on a
    GPU, batches arrive in pinned memory and are copied asynchronously.
    """

    dataset: Any
    num_workers: int = 0
    prefetch_factor: int = 4
    _loader: Any = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def batches(self, epoch: int) -> list[list[int]]:
        order = self.epoch_order(len(self.dataset), epoch)
        return [order[start:start + length].tolist() for start, length in self._chunks(len(order))]

    def __len__(self) -> int:
        return len(self._chunks(len(self.epoch_order(len(self.dataset), 0))))

    def loader(self, epoch: int) -> DataLoader:
        if self._loader is None:
            workers = self.num_workers
            self._loader = DataLoader(
                self.dataset, batch_sampler=_EpochBatches(self), num_workers=workers,
                pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
                prefetch_factor=self.prefetch_factor if workers else None,
                # the loader's own generator seeds its workers without touching torch's global RNG
                generator=torch.Generator().manual_seed(derive_seed(self.seed, STREAM_WORKERS)),
            )
        self._loader.batch_sampler.epoch = epoch
        return self._loader

    def __call__(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        for batch in self.loader(epoch):
            if not isinstance(batch, dict):
                batch = {"image": batch}
            yield {key: value.to(self.device, non_blocking=True) for key, value in batch.items()}

    def with_options(self, **changes) -> "LoaderBatches":
        return dataclasses.replace(self, **changes)


class _EpochBatches:
    """The batch sampler of a persistent loader: the batches of the epoch it is set to."""

    def __init__(self, plan: LoaderBatches):
        self.plan, self.epoch = plan, 0

    def __iter__(self):
        return iter(self.plan.batches(self.epoch))

    def __len__(self) -> int:
        return len(self.plan)


class _Indexed(torch.utils.data.Dataset):
    """A dataset whose items also carry their ``index`` (for per-image training targets)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        return self.__getitems__([i])[0]

    def __getitems__(self, indices):
        return [{**item, "index": torch.tensor(i, dtype=torch.int64)}
                for i, item in zip(indices, _read_items(self.dataset, indices))]


def _read_items(dataset, indices) -> list[dict]:
    """The items at ``indices`` as dicts (a bare tensor becomes ``{"image": ...}``), through the
    dataset's batched ``__getitems__`` when it has one (a streaming dataset reads a batch at once)."""
    fetch = getattr(dataset, "__getitems__", None)
    items = fetch(indices) if fetch is not None else [dataset[i] for i in indices]
    return [item if isinstance(item, dict) else {"image": item} for item in items]


class UnlabelledUnion(torch.utils.data.Dataset):
    """The images of several datasets one after another, without labels: what a transductive
    run (``training.transductive``) trains on. Only the item fields every dataset has are kept,
    less ``label``, so nothing a run learns from can come from a label."""

    def __init__(self, *datasets):
        self.datasets = [d for d in datasets if d is not None and len(d) > 0]
        self.image_shape = self.datasets[0].image_shape
        self.offsets = np.cumsum([0] + [len(d) for d in self.datasets])
        first = [d[0] for d in self.datasets]
        keys = set.intersection(*(set(item) if isinstance(item, dict) else {"image"} for item in first))
        self.keys = sorted(keys - {"label"})

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i):
        return self.__getitems__([i])[0]

    def __getitems__(self, indices):
        # one batched read per part (a streaming dataset reads and moves a batch at once)
        parts = np.searchsorted(self.offsets, indices, side="right") - 1
        items: list = [None] * len(indices)
        for part in np.unique(parts):
            where = np.flatnonzero(parts == part)
            local = [int(indices[w]) - int(self.offsets[part]) for w in where]
            for w, item in zip(where, _read_items(self.datasets[part], local)):
                items[w] = {key: item[key] for key in self.keys}
        return items

    def as_tensors(self):
        parts = [getattr(d, "as_tensors", lambda: None)() for d in self.datasets]
        if not all(isinstance(p, dict) and all(k in p for k in self.keys) for p in parts):
            return None  # a streaming part: batches come through a DataLoader instead
        return {key: torch.cat([p[key].cpu() for p in parts]) for key in self.keys}


def make_batches(dataset, batch_size: int, *, shuffle: bool, drop_last: bool, seed: int,
                 context: DistributedContext, device: torch.device, num_workers: int = 0,
                 with_index: bool = False, min_steps: int = 0):
    """Batches from memory when ``dataset.as_tensors()`` offers tensors, else a DataLoader.

    :param with_index: every batch also carries ``index``, the dataset index of each image.
    """
    as_tensors = getattr(dataset, "as_tensors", None)
    tensors = as_tensors() if callable(as_tensors) else None
    if with_index:
        if isinstance(tensors, dict) and tensors:
            tensors = {**tensors, "index": torch.arange(len(next(iter(tensors.values()))))}
        else:
            dataset = _Indexed(dataset)
    common = dict(batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed,
                  rank=context.rank, world_size=context.world_size, device=device)
    if isinstance(tensors, dict) and tensors:
        if device.type == "cuda" and _fits_on_gpu(tensors, device):
            tensors = {key: value.to(device) for key, value in tensors.items()}  # one copy, no per-step transfer
        return MemoryBatches(tensors=tensors, min_steps=min_steps, **common)
    return LoaderBatches(dataset=dataset, num_workers=num_workers, min_steps=min_steps, **common)


def _fits_on_gpu(tensors: dict[str, torch.Tensor], device: torch.device) -> bool:
    needed = sum(t.numel() * t.element_size() for t in tensors.values())
    free, _ = torch.cuda.mem_get_info(device)
    return needed < free // 4


# ===================================================================== optimisation


def make_optimizer(parameters, training) -> torch.optim.Optimizer:
    """The optimiser named by ``training.optimizer`` (adam, adamw, sgd)."""
    parameters = list(parameters)
    if training.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=training.lr, weight_decay=training.weight_decay)
    if training.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=training.lr, weight_decay=training.weight_decay)
    return torch.optim.SGD(parameters, lr=training.lr, momentum=training.momentum, weight_decay=training.weight_decay)


def make_scheduler(optimizer, training, total_epochs: int):
    """The per-epoch learning-rate schedule named by ``training.scheduler`` (or ``None``)."""
    if training.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_epochs, 1), eta_min=training.min_lr)
    if training.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=training.lr_step_size, gamma=training.lr_gamma)
    return None


# ===================================================================== metrics


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


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out if out or not prefix else {prefix: data}
    return {prefix: data}


def config_differences(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """``(field, old value, new value)`` for every leaf that differs between two configs."""
    flat_old, flat_new = _flatten(old), _flatten(new)
    missing = object()
    keys = list(flat_old) + [k for k in flat_new if k not in flat_old]
    return [
        (key, flat_old.get(key, missing), flat_new.get(key, missing))
        for key in keys
        if flat_old.get(key, missing) != flat_new.get(key, missing)
    ]


# ===================================================================== logging


class _TqdmConsoleHandler(logging.Handler):
    """Console log lines that do not tear the progress bar."""

    def emit(self, record):
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


# ===================================================================== the trainer


class Trainer:
    """Trains an MCE-VAE from an experiment config and writes its run folder.

    :param config: a validated experiment config, a config dict, or a config file path.
    :param resume: continue from ``RUN/checkpoints/last.pt`` (same run folder).
    :param overwrite: start afresh in a run folder that already holds a run.
    :param out_dir: the run folder; overrides ``training.out_dir``.
    :param train_dataset: use this dataset instead of ``build("data", ..., split="train")``.
    :param test_dataset: use this dataset instead of ``build("data", ..., split="test")``.
    :param console: also log to the console (rank 0 only).

    After :meth:`run`: ``model`` (the trained :class:`~mcvae_framework.model.MCEVAE`),
    ``history`` (the metrics rows) and ``summary`` (wall time, images per second).
    """

    def __init__(self, config, *, resume: bool = False, overwrite: bool = False, out_dir: str | Path | None = None,
                 train_dataset=None, test_dataset=None, console: bool = True):
        if isinstance(config, (str, Path)):
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
        self.train_dataset = train_dataset
        self.test_dataset = test_dataset
        self.console = console
        self.history: list[dict[str, Any]] = []
        self.epochs_done = 0
        self.summary: dict[str, Any] = {}
        self.model = None
        #: the invariant graph of the training images (graph.enabled), a GraphClusters.
        self.graph = None
        self._handlers: list[logging.Handler] = []

    # ------------------------------------------------------------------ paths

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoints" / "last.pt"

    @property
    def pretrain_epochs(self) -> int:
        return self.config.loss.pretrain_epochs

    @property
    def total_epochs(self) -> int:
        """Pretraining epochs plus ELBO epochs."""
        return self.pretrain_epochs + self.config.training.epochs

    # ------------------------------------------------------------------ entry point

    def run(self) -> Path:
        """Train to ``total_epochs`` (from the last checkpoint when resuming); returns the run folder.

        :raises TrainingError: non-finite loss, unreadable checkpoint, config mismatch on resume.
        :raises TrainingInterrupted: Ctrl-C (the last finished epoch's checkpoint is kept).
        """
        self.context = DistributedContext.from_env()
        self.device = resolve_device(self.config.training.device, self.context)
        self.context.setup(self.device)
        threads = torch.get_num_threads()
        if self.config.training.num_threads:
            torch.set_num_threads(self.config.training.num_threads)
        try:
            self._prepare_run_folder()
            self._build()
            if self.resume:
                self._restore()
            if self.config.graph.enabled and self.graph is None:
                self._build_graph()
                if self.config.graph.refine_epochs and not self.resume:
                    self._refine_labels()
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
            self._log_to_file(error)
            raise error from None
        except TrainingError as error:
            self._log_to_file(error)
            raise
        finally:
            torch.set_num_threads(threads)
            self._close_logging()
            self.context.close()
        return self.run_dir

    # ------------------------------------------------------------------ set-up

    def _prepare_run_folder(self) -> None:
        exists = self.checkpoint_path.exists()
        if self.resume and not exists:
            raise TrainingError(
                f"--resume: {self.run_dir} holds no checkpoint ({self.checkpoint_path} is missing); "
                "start a fresh run without --resume"
            )
        if not self.resume and exists and not self.overwrite:
            raise TrainingError(
                f"{self.run_dir} already holds a run ({self.checkpoint_path}). Continue it with "
                "--resume, start it afresh with --overwrite, or choose another folder with --out-dir."
            )
        self.context.barrier()  # every process has looked before rank 0 changes anything
        if self.context.is_main:
            if not self.resume:
                for stale in (self.run_dir / "checkpoints", self.run_dir / "metrics.csv", self.run_dir / "train.log"):
                    if stale.is_dir():
                        shutil.rmtree(stale)
                    elif stale.exists():
                        stale.unlink()
            (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            self._open_logging()
            atomic_write_text(self.run_dir / "config.json", json.dumps(self.config_dict, indent=2) + "\n")
        self.context.barrier()

    def _open_logging(self) -> None:
        log.setLevel(logging.INFO)
        file_handler = logging.FileHandler(self.run_dir / "train.log", mode="a", encoding="utf-8")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self._handlers.append(file_handler)
        if self.console:
            console = _TqdmConsoleHandler()
            console.setFormatter(logging.Formatter("%(message)s"))
            self._handlers.append(console)
        for handler in self._handlers:
            log.addHandler(handler)
        self._propagate, log.propagate = log.propagate, False

    def _log_to_file(self, error: Exception) -> None:
        """Record why training stopped in train.log (the console gets it from the caller)."""
        record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "%s", (error,), None)
        for handler in self._handlers:
            if isinstance(handler, logging.FileHandler):
                handler.handle(record)

    def _close_logging(self) -> None:
        for handler in self._handlers:
            log.removeHandler(handler)
            handler.close()
        if self._handlers:
            log.propagate = self._propagate
        self._handlers = []

    def _build(self) -> None:
        from .model import build_model

        cfg, training = self.config, self.config.training
        seed_everything(training.seed)
        train_data = self.train_dataset if self.train_dataset is not None else build("data", cfg.data, split="train")
        test_data = self.test_dataset
        if test_data is None and (training.eval_every or training.transductive):
            test_data = build("data", cfg.data, split="test")
        if training.transductive:
            # the test images join training without labels; evaluation still scores the test split
            train_data = UnlabelledUnion(train_data, test_data)
        self.image_shape = tuple(int(s) for s in train_data.image_shape)
        self.model = build_model(cfg, image_shape=self.image_shape).to(self.device)
        self.loss_module = LossModule(self.model, cfg.loss)
        self.trained_module = wrap_for_training(self.loss_module, self.context, self.device)
        self.optimizer = make_optimizer(self.model.parameters(), training)
        self.scheduler = make_scheduler(self.optimizer, training, self.total_epochs)
        # The trainer's own stream for the loss's sampling; distinct per process.
        self.loss_generator = torch.Generator(device=self.device)
        self.loss_generator.manual_seed(derive_seed(training.seed, STREAM_LOSS, self.context.rank))
        self.train_data = train_data
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
        n_params = sum(p.numel() for p in self.model.parameters())
        log.info(
            "run folder %s | data %s: %d train / %s test images of shape %s | %d parameters | device %s%s",
            self.run_dir, cfg.data.type, len(train_data), len(test_data) if test_data is not None else 0,
            self.image_shape, n_params, self.device,
            f" x {self.context.world_size} processes" if self.context.enabled else "",
        )

    def _restore(self) -> None:
        checkpoint = load_checkpoint(self.checkpoint_path)
        self._check_compatible(checkpoint)
        try:
            self.model.load_state_dict(checkpoint["model"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            if self.scheduler is not None and checkpoint.get("scheduler") is not None:
                self.scheduler.load_state_dict(checkpoint["scheduler"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise TrainingError(
                f"cannot resume from {self.checkpoint_path}: its state does not fit the model the config "
                f"builds ({str(exc).splitlines()[0]}). Resume with the run's own config "
                f"({self.run_dir / 'config.json'}) or start a fresh run in another --out-dir."
            ) from None
        self.history = list(checkpoint["metrics"])
        self.epochs_done = int(checkpoint["epoch"])
        if checkpoint.get("graph") is not None and self.config.graph.enabled:
            self._use_graph(GraphClusters.from_state_dict(checkpoint["graph"]))
            if checkpoint.get("guide") is not None:  # the labels self-labelling had reached
                self._set_guide(checkpoint["guide"]["labels"], checkpoint["guide"]["confident"])
        states = checkpoint["rng"]
        restore_rng_state(states[min(self.context.rank, len(states) - 1)], {"loss": self.loss_generator})
        if len(states) != self.context.world_size:
            log.warning("resuming %d-process checkpoint with %d processes: loss noise is reseeded",
                        len(states), self.context.world_size)
            self.loss_generator.manual_seed(
                derive_seed(self.config.training.seed, STREAM_LOSS, self.context.rank, self.epochs_done))
        log.info("resumed from %s after epoch %d of %d", self.checkpoint_path, self.epochs_done, self.total_epochs)

    def _check_compatible(self, checkpoint: dict) -> None:
        differences = config_differences(checkpoint["config"], self.config_dict)
        fatal = [d for d in differences if d[0].startswith(RESUME_MUST_MATCH)]
        if tuple(checkpoint["image_shape"]) != self.image_shape:
            fatal.append(("image shape", tuple(checkpoint["image_shape"]), self.image_shape))
        if fatal:
            listing = "; ".join(f"{key}: checkpoint {old!r}, config {new!r}" for key, old, new in fatal)
            raise TrainingError(
                f"cannot resume {self.run_dir}: the config describes a different model than its checkpoint "
                f"{self.checkpoint_path} ({listing}). Resume with the run's own config "
                f"({self.run_dir / 'config.json'}), or start a fresh run in another --out-dir."
            )
        for key, old, new in differences:
            if key != "training.out_dir":
                log.warning("resuming with a changed setting: %s was %r, now %r", key, old, new)

    # ------------------------------------------------------------------ the loop

    def _train(self) -> None:
        log.info("%s", self._epochs_line())
        self._open_tensorboard()
        if self.epochs_done >= self.total_epochs:
            log.info("nothing to do: the run already finished its %d epochs", self.total_epochs)
        wall_start = time.perf_counter()
        images = 0
        train_seconds = 0.0
        for epoch in range(self.epochs_done, self.total_epochs):
            lr = self.optimizer.param_groups[0]["lr"]
            train_terms, n_images, seconds = self._train_epoch(epoch)
            if epoch + 1 == self.pretrain_epochs:
                self._fit_prior()
            elif epoch >= self.pretrain_epochs and self.config.loss.reseed_below > 0:
                train_terms["reseeded_components"] = float(self._reseed_small_components(epoch))
            if self._relabels(epoch):
                train_terms["relabel_changed"] = self._relabel(epoch)
            if self.scheduler is not None:
                self.scheduler.step()
            test_terms = self._evaluate(epoch) if self._evaluates(epoch) else {}
            images += n_images
            train_seconds += seconds
            row = {"epoch": epoch + 1, "phase": self._phase(epoch), "seconds": seconds,
                   "images_per_second": n_images / max(seconds, 1e-9), "lr": lr}
            row.update({f"train_{k}": v for k, v in train_terms.items()})
            row.update({f"test_{k}": v for k, v in test_terms.items()})
            self.history.append(row)
            self.epochs_done = epoch + 1
            self._save_checkpoint()
            if self.context.is_main:
                write_metrics_csv(self.run_dir / "metrics.csv", self.history)
            self._log_tensorboard(row)
            log.info("%s", self._epoch_line(row, train_terms, test_terms))
        wall = time.perf_counter() - wall_start
        self.summary = {"epochs": self.epochs_done, "wall_seconds": wall, "train_images": images,
                        "images_per_second": images / train_seconds if train_seconds else float("nan")}
        self._close_tensorboard()
        if images:  # the run folder was named in the first line (and `mcvae train` prints it once more)
            log.info("finished %d epochs in %.1f s (%.0f training images/s)", self.epochs_done,
                     wall, self.summary["images_per_second"])

    def _epochs_line(self) -> str:
        """What the run will do, in the words of the config: ``loss.pretrain_epochs`` of
        pretraining, then ``training.epochs`` of ELBO training."""
        line = (f"{self.pretrain_epochs} pretraining + {self.config.training.epochs} training epochs "
                f"({self.total_epochs} in all: loss.pretrain_epochs + training.epochs)")
        if self.epochs_done:
            line += f"; {self.epochs_done} done, {max(self.total_epochs - self.epochs_done, 0)} to go"
        return line

    # ------------------------------------------------------------------ TensorBoard and best.pt

    def _open_tensorboard(self) -> None:
        """``RUN/tensorboard`` event files when ``training.tensorboard`` is on (rank 0 writes)."""
        self._tensorboard = None
        if not self.config.training.tensorboard:
            return
        try:  # on every process, so that all stop together when the package is missing
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            from .errors import ConfigError

            raise ConfigError([("training.tensorboard", "true needs the tensorboard package: `pip install "
                                "tensorboard` (or `pip install 'mcvae-framework[tensorboard]'`), or set "
                                "training.tensorboard: false")], str(self.run_dir / "config.json")) from None
        if not self.context.is_main:
            return
        folder = self.run_dir / "tensorboard"
        if not self.resume and folder.is_dir():
            shutil.rmtree(folder)  # a fresh run: no curves of an overwritten one
        batches = self.test_batches if self.test_batches is not None else self.train_batches
        first = next(iter(batches.with_options(shuffle=False, drop_last=False, rank=0, world_size=1,
                                               batch_size=8)(0)))
        self._tensorboard_images = first["image"][:8].detach().cpu()
        self._tensorboard = SummaryWriter(log_dir=str(folder))

    def _log_tensorboard(self, row: dict[str, Any]) -> None:
        """One epoch's row: every loss term (train and test in one chart per term), images/s,
        the learning rate, and a grid of the same test images, their reconstructions and
        canonical reconstructions."""
        writer = getattr(self, "_tensorboard", None)
        if writer is None:
            return
        step = int(row["epoch"])
        for key, value in row.items():
            if key.startswith(("train_", "test_")) and isinstance(value, (int, float)) and math.isfinite(value):
                split, term = key.split("_", 1)
                writer.add_scalar(f"{term}/{split}", value, step)
        writer.add_scalar("speed/images_per_second", row["images_per_second"], step)
        writer.add_scalar("optimizer/lr", row["lr"], step)
        writer.add_image("reconstructions (input, reconstruction, canonical)", self._reconstruction_grid(), step)
        writer.flush()

    @torch.no_grad()
    def _reconstruction_grid(self) -> torch.Tensor:
        from torchvision.utils import make_grid

        from .evaluation import model_outputs

        images = self._tensorboard_images
        was_training = self.model.training
        try:
            out = model_outputs(self.model, images, batch_size=len(images))
        finally:
            self.model.train(was_training)
        rows = torch.cat([images, out["reconstruction"].float(), out["canonical"].float()]).clamp(0, 1)
        return make_grid(rows, nrow=len(images), padding=2, pad_value=1.0)

    def _close_tensorboard(self) -> None:
        writer = getattr(self, "_tensorboard", None)
        if writer is not None:
            writer.close()
        self._tensorboard = None

    def _improves_best(self) -> bool:
        """Whether the epoch just finished is the best ELBO epoch so far by
        ``training.best_metric`` (lower is better). The best so far comes from the history,
        so a resumed run goes on comparing with the epochs before the interruption."""
        metric = self.config.training.best_metric
        if not self.history or self.history[-1].get("phase") == "pretrain":
            return False

        def value(row):
            v = row.get(metric)
            return v if isinstance(v, (int, float)) and math.isfinite(v) and row.get("phase") != "pretrain" else None

        current = value(self.history[-1])
        if current is None:
            prefix = metric.split("_", 1)[0] + "_"
            known = [k for k in self.history[-1] if k.startswith(prefix)]
            if known and metric not in self.history[-1] and not getattr(self, "_best_warned", False):
                self._best_warned = True
                log.warning("training.best_metric %r is not a column of metrics.csv (%s): checkpoints/best.pt "
                            "is not written", metric, ", ".join(known))
            return False
        earlier = [v for v in map(value, self.history[:-1]) if v is not None]
        return not earlier or current < min(earlier)

    def _phase(self, epoch: int) -> str:
        return "pretrain" if epoch < self.pretrain_epochs else "train"

    def _evaluates(self, epoch: int) -> bool:
        every = self.config.training.eval_every
        return bool(self.test_batches is not None and every and ((epoch + 1) % every == 0 or epoch + 1 == self.total_epochs))

    def _epoch_line(self, row, train_terms, test_terms) -> str:
        parts = [f"epoch {row['epoch']}/{self.total_epochs} ({row['phase']})",
                 f"{row['seconds']:.1f} s", f"{row['images_per_second']:.0f} img/s",
                 f"train loss {train_terms.get('loss', float('nan')):.4g}"]
        if test_terms:
            parts.append(f"test loss {test_terms.get('loss', float('nan')):.4g}")
        return " | ".join(parts)

    def _train_epoch(self, epoch: int) -> tuple[dict[str, float], int, float]:
        """One epoch of optimisation; returns (mean terms over all processes, images, seconds)."""
        training = self.config.training
        pretrain = epoch < self.pretrain_epochs
        loss_epoch = epoch - self.pretrain_epochs  # warm-up counts ELBO epochs only
        self.trained_module.train()
        averager = TermAverager()
        steps = len(self.train_batches)
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{self.total_epochs}", leave=False, dynamic_ncols=True,
                   disable=True if not (self.context.is_main and training.progress) else None)
        start = time.perf_counter()
        try:
            for step, batch in enumerate(self.train_batches(epoch), start=1):
                try:
                    terms = self.trained_module(batch, epoch=loss_epoch, generator=self.loss_generator,
                                                pretrain=pretrain)
                except RuntimeError:
                    # e.g. binary_cross_entropy refuses NaN predictions: name the bad data if that is the cause
                    if self._nonfinite_inputs(batch):
                        raise self._nonfinite_error(epoch, step, steps, self._nonfinite_inputs(batch)) from None
                    raise
                names = list(terms)
                values = self._finite_values(terms, names, epoch, step, steps, batch)
                self.optimizer.zero_grad(set_to_none=True)
                terms["loss"].backward()
                if training.grad_clip > 0:
                    norm = nn.utils.clip_grad_norm_(self.model.parameters(), training.grad_clip)
                    if not torch.isfinite(norm):  # identical on every process: grads are averaged
                        raise self._nonfinite_error(epoch, step, steps, ["gradient norm"])
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

    @staticmethod
    def _nonfinite_inputs(batch: dict[str, torch.Tensor]) -> list[str]:
        return [f"input {key!r} holds NaN/inf" for key, value in batch.items()
                if value.is_floating_point() and not bool(torch.isfinite(value).all())]

    def _finite_values(self, terms: dict[str, torch.Tensor], names: list[str], epoch: int, step: int,
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
            raise self._nonfinite_error(
                epoch, step, steps,
                [f"{name} = {float(local[i])}" if not math.isfinite(float(local[i])) else f"{name} (on another process)"
                 for i, name in enumerate(names) if bad[i] > 0] + self._nonfinite_inputs(batch),
            )
        return values.cpu()

    def _nonfinite_error(self, epoch: int, step: int, steps: int, what: list[str]) -> TrainingError:
        return TrainingError(
            f"training stopped: non-finite value at epoch {epoch + 1} of {self.total_epochs}, step {step} of {steps} "
            f"({self._phase(epoch)} phase): {', '.join(what)}. No checkpoint was written after this step; the last "
            f"good checkpoint (epoch {self.epochs_done}) is {self.checkpoint_path}. Check the data for NaN/inf "
            "values, or lower training.lr / set training.grad_clip, then --resume or start afresh."
        )

    def _fit_prior(self) -> None:
        """After pretraining: fit the mixture prior to the encoded ``z_c`` means of the whole
        training set (on rank 0, then copied to every process)."""
        if self.context.is_main:
            encode_all = self.train_batches.with_options(
                shuffle=False, drop_last=False, rank=0, world_size=1, batch_size=self.config.training.eval_batch_size)
            self.model.eval()
            with torch.no_grad():
                posteriors = [self.model.encode(batch["image"]).z_cluster for batch in encode_all(0)]
            latents = torch.cat([posterior.mean for posterior in posteriors])
            if self.graph is not None:
                # One draw of every posterior: each component then matches its cluster's share of
                # the aggregate posterior, posterior spread included (fitted to the means alone, a
                # component can be far narrower than the posteriors it must hold, and the mixture
                # KL starts huge).
                noise = torch.Generator().manual_seed(derive_seed(self.config.training.seed, STREAM_EVAL))
                draws = torch.cat([p.sample(noise) for p in posteriors])
            if self.graph is not None and self._init_from_assignments(draws, self.loss_module.guide["labels"].cpu()):
                log.info("fitted the %s prior to %d encoded training images, one component per invariant-graph "
                         "cluster", self.config.prior.type, len(latents))
            else:
                self.model.fit_prior(latents)
                log.info("fitted the %s prior to %d encoded training images", self.config.prior.type, len(latents))
            self.model.train()
        self.context.broadcast_module_state(self.model.prior)
        in_optimizer = {id(p) for group in self.optimizer.param_groups for p in group["params"]}
        if any(id(p) not in in_optimizer for p in self.model.parameters()):
            raise TrainingError(
                f"the {self.config.prior.type!r} prior replaced its parameter tensors in init_from; it must copy "
                "into the existing ones (param.copy_(...)) so the optimiser keeps training them"
            )

    def _build_graph(self) -> None:
        """The invariant graph of the training images (rank 0 computes, every process gets it)."""
        graph = None
        if self.context.is_main:
            cfg = self.config.graph
            images = _stack_images(self.train_data)
            log.info("building the invariant graph of %d training images (%d search poses, %d neighbours)",
                     len(images), cfg.search_size, cfg.neighbours)
            graph = invariant_graph_clusters(
                images, self.model.group, self.model.prior.n_components, neighbours=cfg.neighbours,
                embedding_dim=cfg.embedding_dim, diffusion_time=cfg.diffusion_time, blur_sigma=cfg.blur_sigma,
                search_size=cfg.search_size,
                pca_dim=cfg.pca_dim, confident_fraction=cfg.confident_fraction, seed=self.config.training.seed,
                kmeans_restarts=cfg.kmeans_restarts, progress=self.config.training.progress,
            )
            log.info("invariant graph: %d clusters of sizes %s, %d confident images, %.1f s",
                     len(graph.info["cluster_sizes"]), graph.info["cluster_sizes"], int(graph.confident.sum()),
                     graph.seconds)
        graph = self.context.all_gather_objects(graph)[0]
        self._use_graph(graph)

    def _refine_labels(self) -> None:
        """``graph.refine_epochs``: warm the encoder up on the graph's labels and neighbours
        (:mod:`mcvae_framework.refinement`, on rank 0); its labels of every training image
        then replace the graph's, every image trusted."""
        cfg = self.config.graph
        refined = None
        if self.context.is_main:
            log.info("refining the graph's labels: %d passes over its %d confident images", cfg.refine_epochs,
                     int(self.graph.confident.sum()))
            generator = torch.Generator().manual_seed(derive_seed(self.config.training.seed, STREAM_REFINE))
            refined = refine_labels(
                self.model, _stack_images(self.train_data), self.graph.labels, self.graph.confident,
                self.graph.neighbours, epochs=cfg.refine_epochs, batch_size=self.config.training.batch_size,
                lr=cfg.refine_lr, neighbour_weight=cfg.refine_neighbour_weight,
                balance_weight=cfg.refine_balance_weight, smoothing=cfg.refine_smoothing, generator=generator,
                device=self.device, progress=self.config.training.progress)
            log.info("refined labels: %.1f%% differ from the graph's, clusters of sizes %s, %.1f s",
                     100 * refined.changed, torch.bincount(refined.labels, minlength=self.model.prior.n_components)
                     .tolist(), refined.seconds)
        refined = self.context.all_gather_objects(refined)[0]
        self.context.broadcast_module_state(self.model.encoder)
        self._set_guide(refined.labels, torch.ones_like(refined.labels, dtype=torch.bool))

    def _use_graph(self, graph: GraphClusters) -> None:
        self.graph = graph
        self._set_guide(graph.labels, graph.confident)

    def _set_guide(self, labels: torch.Tensor, confident: torch.Tensor) -> None:
        """The labels the self-labelling term learns and which of them it trusts; for the
        neighbour-consistency term also the graph's neighbours and the training images, which
        it reads from memory."""
        self.loss_module.guide = {"labels": labels.to(self.device), "confident": confident.to(self.device)}
        if self.config.loss.neighbour_weight <= 0:
            return
        tensors = getattr(self.train_batches, "tensors", None)
        if tensors is None:
            log.warning("loss.neighbour_weight is ignored: the training set is not held in memory")
            return
        self.loss_module.guide["neighbours"] = self.graph.neighbours.to(self.device)
        self.loss_module.guide["images"] = tensors["image"].to(self.device)

    def _init_from_assignments(self, latents: torch.Tensor, assignments: torch.Tensor) -> bool:
        """``prior.init_from_assignments``; False (logged) when the prior does not offer it."""
        try:
            self.model.prior.init_from_assignments(latents, assignments)
        except NotImplementedError:
            log.warning("the %r prior has no init_from_assignments: it is fitted without the given clusters",
                        self.config.prior.type)
            return False
        return True

    def _reseed_small_components(self, epoch: int) -> int:
        """Re-seed every component that holds fewer than ``loss.reseed_below`` of its fair share
        of (a fixed sample of) the training images, by splitting the largest cluster in two
        (2-means of its latents); returns how many were re-seeded (the same on every process)."""
        count = 0
        if self.context.is_main:
            latents, pick = self._sample_latents()
            k = self.model.prior.n_components
            with torch.no_grad():
                clusters = self.model.prior.responsibilities(latents).argmax(-1).cpu()
            floor = self.config.loss.reseed_below * len(clusters) / k
            for component in range(k):
                sizes = torch.bincount(clusters, minlength=k)
                if sizes[component] >= floor or len(clusters) < 2 * k:
                    continue
                largest = int(sizes.argmax())
                members = torch.nonzero(clusters == largest).squeeze(1)
                halves = KMeans(n_clusters=2, n_init=3, random_state=epoch).fit_predict(
                    latents[members].detach().cpu().double().numpy())
                clusters[members[torch.as_tensor(halves) == 1]] = component
                log.warning("epoch %d: component %d held %d of %d sampled training images (fewer than %.0f); "
                            "re-seeded by splitting component %d", epoch + 1, component, int(sizes[component]),
                            len(clusters), floor, largest)
                count += 1
            if count and self.loss_module.guide is not None:
                # Guided training: the components go back to the clusters the self-labelling
                # term teaches, rather than to an arbitrary split.
                clusters = self.loss_module.guide["labels"].cpu()[pick]
                log.warning("epoch %d: re-seeded from the self-labelling term's clusters instead", epoch + 1)
            if count and not self._init_from_assignments(latents.cpu(), clusters):
                count = 0
        self.context.broadcast_module_state(self.model.prior)
        return int(self.context.all_gather_objects(count)[0])

    def _relabels(self, epoch: int) -> bool:
        every = self.config.graph.relabel_every
        done = epoch + 1 - self.pretrain_epochs
        return bool(self.graph is not None and every and done > 0 and done % every == 0)

    def _relabel(self, epoch: int) -> float:
        """Self-labelling: the model's clusters of the training images become the labels the
        self-labelling term learns from; returns the share of images whose label changed."""
        guide = None
        if self.context.is_main:
            images = _stack_images(self.train_data)
            self.model.eval()
            try:
                with torch.no_grad():
                    probabilities = torch.cat([
                        self.model.cluster_probabilities(images[i:i + 512].to(self.device)).cpu()
                        for i in range(0, len(images), 512)])
            finally:
                self.model.train()
            confidence, labels = probabilities.max(-1)
            confident = central_members(labels.numpy(), -confidence.numpy(), self.config.graph.confident_fraction)
            guide = {"labels": labels, "confident": torch.as_tensor(confident)}
        guide = self.context.all_gather_objects(guide)[0]
        changed = float((guide["labels"] != self.loss_module.guide["labels"].cpu()).double().mean())
        self._set_guide(guide["labels"], guide["confident"])
        log.info("epoch %d: self-labelling from the model's clusters (%.1f%% of the labels changed)",
                 epoch + 1, 100 * changed)
        return changed

    def _sample_latents(self, size: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
        """One posterior draw of ``z_c`` for each of a fixed, seeded sample of the training
        images (draws, not means, so that a component fitted to them is as wide as the
        posteriors it holds), and the sample's indices."""
        n = len(self.train_data)
        generator = torch.Generator().manual_seed(derive_seed(self.config.training.seed, STREAM_EVAL))
        pick = torch.randperm(n, generator=generator)[:size].sort().values
        images = _stack_images(self.train_data, pick)
        self.model.eval()
        try:
            with torch.no_grad():
                return torch.cat([self.model.encode(images[i:i + 512].to(self.device)).z_cluster.sample(generator)
                                  for i in range(0, len(images), 512)]), pick
        finally:
            self.model.train()

    def _evaluate(self, epoch: int) -> dict[str, float]:
        """Mean loss terms on the test split (eval mode, no gradients, fixed noise)."""
        pretrain = epoch < self.pretrain_epochs
        generator = torch.Generator(device=self.device)
        generator.manual_seed(derive_seed(self.config.training.seed, STREAM_EVAL, self.context.rank))
        averager = TermAverager()
        self.loss_module.eval()
        try:
            with torch.no_grad():
                for batch in self.test_batches(epoch):
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

    def _save_checkpoint(self) -> None:
        """``checkpoints/last.pt`` (atomically) for the epochs finished so far, and
        ``checkpoints/best.pt`` when the epoch is the best by ``training.best_metric``; every
        process's RNG states go in, so that a resumed DDP run draws what an uninterrupted one would."""
        rng_states = self.context.all_gather_objects(capture_rng_state({"loss": self.loss_generator}))
        if not self.context.is_main:
            return
        checkpoint = {
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
            "graph": self.graph.state_dict() if self.graph is not None else None,
            "guide": ({k: self.loss_module.guide[k].cpu() for k in ("labels", "confident")}
                      if self.loss_module.guide else None),
        }
        save_checkpoint(checkpoint, self.checkpoint_path)
        if self._improves_best():
            save_checkpoint(checkpoint, self.checkpoint_path.with_name("best.pt"))
        every = self.config.training.checkpoint_every
        if every and self.epochs_done and self.epochs_done % every == 0:
            save_checkpoint(checkpoint, self.checkpoint_path.with_name(f"epoch_{self.epochs_done:04d}.pt"))


def _stack_images(dataset, indices: torch.Tensor | None = None) -> torch.Tensor:
    """``(N, C, H, W)`` images of a dataset (all, or those at ``indices``), on the CPU."""
    as_tensors = getattr(dataset, "as_tensors", None)
    tensors = as_tensors() if callable(as_tensors) else None
    if isinstance(tensors, dict) and "image" in tensors:
        images = tensors["image"]
        return (images if indices is None else images[indices]).cpu()
    order = range(len(dataset)) if indices is None else indices.tolist()
    items = (dataset[i] for i in order)
    return torch.stack([item["image"] if isinstance(item, dict) else item for item in items])


def train(config, resume: bool = False, **options) -> Path:
    """Train from a config (object, dict or file path); returns the run folder.

    :param resume: continue the run in ``training.out_dir`` from its last checkpoint.
    :param options: further :class:`Trainer` keyword arguments (``out_dir``, ``overwrite``, ...).
    """
    return Trainer(config, resume=resume, **options).run()


def load_trained_model(run_dir: str | Path, device: str | torch.device = "cpu"):
    """The config and the trained model of a run, in eval mode.

    :param run_dir: a run folder (its ``checkpoints/last.pt`` is read) or a checkpoint file.
    :param device: where to put the model.
    :returns: ``(config, model)``.
    :raises TrainingError: no readable checkpoint there.
    """
    from .model import build_model

    path = Path(run_dir)
    checkpoint_path = path if path.is_file() else path / "checkpoints" / "last.pt"
    checkpoint = load_checkpoint(checkpoint_path)
    config = validate_config(checkpoint["config"], source=str(checkpoint_path))
    with torch.random.fork_rng(devices=[]):  # building initialises weights: leave the caller's RNG alone
        model = build_model(config, image_shape=tuple(checkpoint["image_shape"]))
    model.load_state_dict(checkpoint["model"])
    return config, model.to(device).eval()


__all__ = [
    "LossModule",
    "Trainer",
    "TrainingInterrupted",
    "load_trained_model",
    "make_optimizer",
    "make_scheduler",
    "train",
]
