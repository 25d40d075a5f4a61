"""What the core does with any dataset: read items, stack a split into tensors, join splits.

Every path from a dataset to stacked tensors (training's graph and self-labelling,
evaluation, prediction, plots, ``mcvae data show``) goes through :func:`dataset_tensors`;
the trainer's batch sources (:mod:`mcvae_framework.train.batching`) cut batches from the same
``as_tensors()`` or read them through :func:`read_items`.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from torch.utils.data import default_collate

#: items read per batched call when a split is stacked item by item.
READ_CHUNK = 512


def read_items(dataset, indices) -> list[dict]:
    """The items at ``indices`` as dicts (a bare tensor becomes ``{"image": ...}``), through the
    dataset's batched ``__getitems__`` when it has one (a streaming dataset reads a batch at once)."""
    fetch = getattr(dataset, "__getitems__", None)
    items = fetch(indices) if fetch is not None else [dataset[i] for i in indices]
    return [item if isinstance(item, dict) else {"image": item} for item in items]


def dataset_tensors(dataset, keys: Iterable[str] | None = None,
                    indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Items of ``dataset`` stacked by key (``image``, ``label``, ``canonical``, ``pose``).

    Uses the dataset's ``as_tensors()`` when it offers one (no copy); otherwise reads the
    items in chunks through :func:`read_items`. No random number is drawn either way (a
    ``DataLoader`` would draw a worker seed from torch's global generator), so stacking a
    split inside a training run leaves the run's random streams alone.

    :param keys: only these keys (default: every key of an item).
    :param indices: only the items at these positions, in this order (default: all).
    """
    as_tensors = getattr(dataset, "as_tensors", None)
    tensors = as_tensors() if callable(as_tensors) else None
    wanted = list(keys) if keys is not None else None
    if tensors is not None:
        picked = {k: v for k, v in tensors.items() if wanted is None or k in wanted}
        return picked if indices is None else {k: v[indices] for k, v in picked.items()}
    order = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(order), READ_CHUNK):
        items = read_items(dataset, order[start:start + READ_CHUNK])
        if wanted is not None:
            items = [{k: item[k] for k in wanted if k in item} for item in items]
        for key, value in default_collate(items).items():
            parts.setdefault(key, []).append(torch.as_tensor(value))
    return {key: torch.cat(values) for key, values in parts.items()}


class IndexedDataset(torch.utils.data.Dataset):
    """A dataset whose items also carry their ``index`` (for per-image training targets)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        return self.__getitems__([i])[0]

    def __getitems__(self, indices):
        return [{**item, "index": torch.tensor(i, dtype=torch.int64)}
                for i, item in zip(indices, read_items(self.dataset, indices))]


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
            for w, item in zip(where, read_items(self.datasets[part], local)):
                items[w] = {key: item[key] for key in self.keys}
        return items

    def as_tensors(self):
        parts = [getattr(d, "as_tensors", lambda: None)() for d in self.datasets]
        if not all(isinstance(p, dict) and all(k in p for k in self.keys) for p in parts):
            return None  # a streaming part: batches come through a DataLoader instead
        return {key: torch.cat([p[key].cpu() for p in parts]) for key in self.keys}


class ConcatenatedSplits:
    """Both splits of a dataset, train then test, as one: what ``mcvae predict`` reads from
    a dataset plugin that refuses ``split="all"``."""

    def __init__(self, parts):
        self.parts = parts
        self.image_shape = parts[0].image_shape
        self.split = "all"
        names = [getattr(p, "item_names", None) for p in parts]
        self.item_names = [n for part in names for n in part] if all(n is not None for n in names) else None
        self.source_indices = None
        self.item_splits = [p.split for p in parts for _ in range(len(p))]

    def __len__(self):
        return sum(len(p) for p in self.parts)

    def as_tensors(self):
        tensors = [dataset_tensors(p) for p in self.parts]
        return {k: torch.cat([t[k] for t in tensors]) for k in tensors[0]}


__all__ = ["ConcatenatedSplits", "IndexedDataset", "UnlabelledUnion", "dataset_tensors", "read_items"]
