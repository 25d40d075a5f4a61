"""Two CPU processes (gloo on localhost) train one model with DistributedDataParallel.

The processes are started the way torchrun starts them: RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT in the environment, which the trainer reads.
"""

from __future__ import annotations

import csv
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_training import tiny_config

WORLD_SIZE = 2


def ddp_config(out_dir) -> dict:
    """Pretraining (prior fit on rank 0, then broadcast) plus ELBO epochs, on 96 digits."""
    return tiny_config(out_dir, epochs=1, pretrain_epochs=1, batch_size=16, seed=11, grad_clip=10.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_as_rank(rank: int, port: int, config: dict, result_dir: str) -> None:
    """One torchrun-like worker: train, then save this process's final parameters."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE))
    torch.set_num_threads(1)
    from mcvae_framework.train.trainer import Trainer

    trainer = Trainer(config, console=False)
    trainer.run()
    assert not dist.is_initialized(), "the trainer closes the process group it opened"
    torch.save({"parameters": {k: v.detach() for k, v in trainer.model.named_parameters()},
                "summary": trainer.summary, "history": trainer.history},
               os.path.join(result_dir, f"rank{rank}.pt"))


def test_two_process_ddp_run_finishes_with_identical_parameters(tmp_path):
    run_dir = tmp_path / "run"
    mp.spawn(train_as_rank, args=(free_port(), ddp_config(run_dir), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)]

    first, second = (r["parameters"] for r in results)
    assert first.keys() == second.keys() and any(k.startswith("prior.") for k in first)
    for name in first:
        assert torch.equal(first[name], second[name]), f"{name} differs between the ranks"

    # each rank read half of every epoch (48 digits -> 3 batches of 16); metrics sum both halves
    assert [r["summary"]["train_images"] for r in results] == [2 * 96, 2 * 96]
    def terms(history):  # timings are each process's own; the reduced loss terms are shared
        return [{k: v for k, v in row.items() if k.startswith(("train_", "test_"))} for row in history]

    assert terms(results[0]["history"]) == terms(results[1]["history"])

    # only rank 0 wrote, once: one run folder, one row per epoch
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoints", "config.json", "metrics.csv", "train.log"]
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert [r["phase"] for r in rows] == ["pretrain", "train"]
    checkpoint = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["world_size"] == 2 and len(checkpoint["rng"]) == 2
    for name, value in first.items():
        assert torch.equal(checkpoint["model"][name], value), name
