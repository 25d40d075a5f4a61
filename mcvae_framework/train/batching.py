"""Seeds, random streams and batch sources: how a run turns a dataset into batches.

A run's randomness comes from ``training.seed`` through separate streams
(:func:`derive_seed`): the data order, the loss's noise, evaluation, data-loader workers
and the label refinement never share a sequence. A batch source is called with an epoch
and yields that epoch's batches: :class:`MemoryBatches` slices stacked tensors,
:class:`LoaderBatches` reads through a ``DataLoader`` (streaming datasets); both cut the
same indices, so a streamed run sees what a run in memory sees.
"""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..runtime.data import IndexedDataset
from ..runtime.distributed import DistributedContext

#: independent random streams derived from ``training.seed`` (see :func:`derive_seed`).
STREAM_DATA, STREAM_LOSS, STREAM_EVAL, STREAM_WORKERS, STREAM_REFINE, STREAM_POSE_WARMUP = 1, 2, 3, 4, 5, 6


def derive_seed(*parts: int) -> int:
    """A 63-bit seed for one random stream, mixed from ``training.seed`` and stream ids
    (so the data order, the loss noise and the evaluation noise never share a sequence)."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def sample_indices(n_images: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """A sorted sample of ``size`` of ``n_images`` positions (all when fewer), drawn from
    ``generator``: seeded from one stream, the same sample every time."""
    return torch.randperm(n_images, generator=generator)[:size].sort().values


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global RNG and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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
            dataset = IndexedDataset(dataset)
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


__all__ = [
    "BatchPlan",
    "LoaderBatches",
    "MemoryBatches",
    "STREAM_DATA",
    "STREAM_EVAL",
    "STREAM_LOSS",
    "STREAM_POSE_WARMUP",
    "STREAM_REFINE",
    "STREAM_WORKERS",
    "derive_seed",
    "make_batches",
    "sample_indices",
    "seed_everything",
]
