"""Streaming datasets: the same items as in memory, the same pose for an index in every
worker, the same batches (and so the same training) as in memory, DDP shards, and the
automatic choice of storage by size.

Moved images are compared to float rounding: the group's vectorised warp may round the
last bit differently depending on how many images share a call (a block of 1,024 in
memory, a batch when streamed). Poses, labels and canonical images are exact.
"""

from __future__ import annotations

import copy
import csv

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mcvae_framework import build
from mcvae_framework.runtime.distributed import DistributedContext
from mcvae_framework.train.trainer import LoaderBatches, MemoryBatches, Trainer, make_batches
from mcvae_framework.interfaces import streaming

SE2 = {"group": "se2", "angle_deg": [-90, 90], "shift": 0.15, "seed": 3, "canvas": 12}


def both(config: dict, split: str):
    memory = build("data", {**config, "storage": "memory"}, split=split)
    stream = build("data", {**config, "storage": "stream"}, split=split)
    assert type(stream).__name__ == "StreamingImageDataset" and stream.as_tensors() is None
    return memory, stream


@pytest.mark.parametrize("split", ["train", "test", "all"])
def test_streamed_items_equal_the_in_memory_ones(split):
    memory, stream = both({"type": "digits", "limit": 30, "transform": SE2}, split)
    tensors, batch = memory.as_tensors(), stream.batch(range(len(stream)))
    assert tensors.keys() == batch.keys() == {"image", "label", "canonical", "pose"}
    for key in tensors:
        torch.testing.assert_close(batch[key], tensors[key], rtol=0, atol=0 if key != "image" else 1e-5, msg=key)
    assert stream.source_indices == memory.source_indices and stream.split_sizes() == memory.split_sizes()
    assert stream.item_splits == memory.item_splits and stream.image_shape == memory.image_shape
    item = stream[7]
    for key in item:
        torch.testing.assert_close(item[key], tensors[key][7], rtol=0, atol=1e-5)


def test_memory_mapped_npy_streams_the_same_items(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).integers(0, 256, size=(50, 12, 12), dtype=np.uint8))
    memory, stream = both({"type": "arrays", "path": str(path), "transform": {"group": "so2", "seed": 1}}, "all")
    torch.testing.assert_close(stream.batch(range(50))["image"], memory.as_tensors()["image"], rtol=0, atol=1e-5)
    assert isinstance(stream.reader.source(), np.memmap)  # read from the file, not loaded


def test_auto_storage_streams_what_would_not_fit(monkeypatch):
    config = {"type": "digits", "limit": 40, "transform": {"group": "so2", "canvas": 10}}
    assert build("data", config, split="train").as_tensors() is not None
    # 40 items x (moved + canonical) x 10 x 10 float32 = 32,000 bytes
    monkeypatch.setattr(streaming, "STREAM_ABOVE_BYTES", 31_999)
    assert build("data", config, split="train").as_tensors() is None
    monkeypatch.setattr(streaming, "STREAM_ABOVE_BYTES", 32_000)
    assert build("data", config, split="train").as_tensors() is not None


def test_every_worker_gives_an_index_the_same_pose_and_image():
    _, stream = both({"type": "digits", "limit": 24, "transform": SE2}, "train")
    expected = stream.batch(range(len(stream)))
    order = list(reversed(range(len(stream))))
    loader = DataLoader(stream, batch_size=5, sampler=order, num_workers=2)
    got = {key: torch.cat([b[key] for b in loader]) for key in expected}
    for key in expected:
        torch.testing.assert_close(got[key], expected[key][order], rtol=0, atol=0 if key != "image" else 1e-5)
    # the same batches give the same bits in a worker as in this process
    assert torch.equal(next(iter(loader))["image"], stream.batch(order[:5])["image"])


def _tiny(storage: str, workers: int, out_dir) -> dict:
    return {
        "data": {"type": "digits", "limit": 96, "storage": storage, "transform": {"group": "so2", "canvas": 8}},
        "group": {"type": "so2"}, "encoder": {"type": "mlp", "hidden": [32]}, "decoder": {"type": "mlp", "hidden": [32]},
        "prior": {"type": "gmm", "n_components": 3}, "model": {"z_cluster_dim": 2, "z_style_dim": 1},
        "loss": {"mode": "unsupervised", "n_augment": 1},
        "training": {"epochs": 1, "batch_size": 32, "device": "cpu", "seed": 5, "progress": False,
                     "num_workers": workers, "out_dir": str(out_dir)},
    }


def test_a_streamed_run_trains_as_one_in_memory(tmp_path):
    losses = {}
    for storage, workers in (("memory", 0), ("stream", 2)):
        run = Trainer(_tiny(storage, workers, tmp_path / f"{storage}{workers}"), console=False).run()
        with open(run / "metrics.csv") as f:
            losses[storage, workers] = [float(r[k]) for r in csv.DictReader(f) for k in ("train_loss", "test_loss")]
    assert losses["stream", 2] == pytest.approx(losses["memory", 0], rel=1e-4)


def test_ddp_ranks_read_disjoint_halves_of_a_streamed_split():
    memory, stream = both({"type": "digits", "limit": 36}, "train")  # 18 images per rank

    def shards(shuffle: bool):
        out = []
        for rank in (0, 1):
            context = DistributedContext(rank=rank, world_size=2, local_rank=rank)
            common = dict(batch_size=4, shuffle=shuffle, drop_last=False, seed=2, context=context,
                          device=torch.device("cpu"), with_index=True)
            loader, in_memory = make_batches(stream, **common), make_batches(memory, **common)
            assert isinstance(loader, LoaderBatches) and isinstance(in_memory, MemoryBatches)
            indices = [batch["index"] for batch in loader(epoch=1)]
            assert all(torch.equal(a, b["index"]) for a, b in zip(indices, in_memory(epoch=1)))
            out.append(torch.cat(indices).tolist())
        return out

    for shuffle in (True, False):
        first, second = shards(shuffle)
        assert len(first) == len(second) == 18 and not set(first) & set(second)
        assert sorted(first + second) == list(range(36))


def test_a_streamed_dataset_pickles_without_its_open_file(tmp_path):
    import pickle

    path = tmp_path / "x.npy"
    np.save(path, np.zeros((20, 6, 6), np.uint8))
    ds = build("data", {"type": "arrays", "path": str(path), "storage": "stream",
                        "transform": {"group": "so2"}}, split="train")
    ds.batch([0, 1])  # opens the memory map and builds the group
    state = pickle.dumps(copy.copy(ds))
    assert len(state) < 5_000  # neither the mapped array nor the group travel to a worker
    assert torch.equal(pickle.loads(state).batch([3])["image"], ds.batch([3])["image"])
