"""Checkpoint files: atomic replacement, Ctrl-C safety, RNG round trips, clear refusals."""

from __future__ import annotations

import os
import random
import signal

import numpy as np
import pytest
import torch

from mcvae_framework import CheckpointError
from mcvae_framework.runtime.checkpoint import (
    atomic_write,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


def minimal_checkpoint(epoch: int = 1) -> dict:
    return {"epoch": epoch, "config": {"training": {"seed": 0}}, "image_shape": [1, 8, 8],
            "model": {"w": torch.arange(4.0)}, "optimizer": {}, "rng": [capture_rng_state()], "metrics": []}


def draws(generator: torch.Generator) -> list:
    return [random.random(), float(np.random.rand()), float(torch.rand(1)), float(torch.rand(1, generator=generator))]


def test_rng_states_survive_a_safe_save_and_load(tmp_path):
    generator = torch.Generator().manual_seed(5)
    random.gauss(0, 1)  # leaves a cached gaussian in python's state
    np.random.standard_normal()
    state = capture_rng_state({"loss": generator})
    expected = draws(generator)
    torch.save(state, tmp_path / "rng.pt")
    restored = torch.load(tmp_path / "rng.pt", weights_only=True)
    draws(generator)  # move every stream on
    restore_rng_state(restored, {"loss": generator})
    assert draws(generator) == expected


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(minimal_checkpoint(1), path)

    def broken(handle):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, broken)
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_ctrl_c_during_a_write_is_delivered_after_the_file_is_complete(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(minimal_checkpoint(1), path)
    # the handler the process had: Python's default, or "ignore" under nohup (a job started in the background)
    before = signal.getsignal(signal.SIGINT)

    def interrupted_write(handle):
        os.kill(os.getpid(), signal.SIGINT)  # arrives mid-write
        torch.save({"format": "mcvae-checkpoint", "format_version": 1, **minimal_checkpoint(2)}, handle)

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, interrupted_write)
    assert load_checkpoint(path)["epoch"] == 2
    assert signal.getsignal(signal.SIGINT) is before  # put back as it was


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "truncated"),
        (lambda p: p.write_bytes(b""), "truncated"),
        (lambda p: p.write_bytes(os.urandom(256)), "corrupt"),
        (lambda p: torch.save({"weights": torch.zeros(2)}, p), "not an mcvae checkpoint"),
        (lambda p: torch.save({"format": "mcvae-checkpoint", "format_version": 99}, p), "format version 99"),
        (lambda p: torch.save({"format": "mcvae-checkpoint", "format_version": 1, "epoch": 1}, p), "incomplete"),
        (lambda p: p.unlink(), "does not exist"),
    ],
    ids=["truncated", "empty", "garbage", "foreign", "future-version", "incomplete", "missing"],
)
def test_a_damaged_checkpoint_is_refused_naming_the_file(tmp_path, damage, message):
    path = tmp_path / "run" / "checkpoints" / "last.pt"
    save_checkpoint(minimal_checkpoint(), path)
    damage(path)
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and info.value.exit_code == 2


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "last.pt"
    torch.save({"format": "mcvae-checkpoint", "format_version": 1, "payload": np.float64(1.0)}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(path)
