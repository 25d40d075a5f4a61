"""Checkpoint files: atomic writes, safe loading, and the RNG states a resume needs.

A checkpoint is a plain ``dict`` of tensors and primitive containers, so it loads with
``torch.load(weights_only=True)``: opening one never executes code. Layout::

    format, format_version      "mcvae-checkpoint", 1
    epoch                       epochs finished (pretraining included)
    config                      the resolved experiment config (JSON-able dict)
    image_shape                 [C, H, W] of the data the model was built for
    model, optimizer, scheduler state dicts (scheduler: None without a schedule)
    rng                         RNG states, one entry per process (see capture_rng_state)
    metrics                     the rows of metrics.csv so far
    versions                    python, torch, numpy, mcvae_framework versions
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from .run_layout import RunLayout

FORMAT = "mcvae-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("epoch", "config", "image_shape", "model", "optimizer", "rng", "metrics")


# ---------------------------------------------------------------- package versions


def package_versions() -> dict[str, str]:
    """Versions of what shapes a checkpoint's contents (recorded, not enforced)."""
    # Here, not at the top: the package's __init__ sets __version__ only after importing
    # its modules, so a module it imports cannot read it at import time.
    from .. import __version__

    return {
        "python": platform.python_version(),
        # str(): torch's version is a TorchVersion object, which weights_only refuses
        "torch": str(torch.__version__),
        "numpy": str(np.__version__),
        "mcvae_framework": str(__version__),
    }


# ---------------------------------------------------------------- RNG states


def capture_rng_state(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """This process's RNG states as tensors and primitive containers.

    :param generators: the trainer's own generators, saved by name.
    """
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {
        # python's state is a tuple of 625 ints: a list survives weights_only loading.
        "python": [version, list(internal), gauss_next],
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }
    return state


def restore_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    """Put back what :func:`capture_rng_state` saved (generators by name)."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    for name, generator in (generators or {}).items():
        if name in state["generators"]:
            generator.set_state(state["generators"][name])


# ---------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def deferred_keyboard_interrupt():
    """Hold back Ctrl-C while a file is being replaced, then deliver it.

    A checkpoint is either the old one or the new one, never half of each, even when
    Ctrl-C arrives mid-write. Only the main thread can install signal handlers; other
    threads rely on the temp-file-and-rename alone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write) -> None:
    """Write ``path`` through ``write(file_object)`` into a temp file in the same folder,
    fsync it and ``os.replace`` it over ``path``: readers see the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with deferred_keyboard_interrupt():
        try:
            with open(tmp, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        _fsync_directory(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Write a checkpoint dict atomically (adds the format marker)."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **checkpoint}
    atomic_write(path, lambda handle: torch.save(payload, handle))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint onto the CPU with ``weights_only=True``.

    :raises CheckpointError: the file is missing, truncated, corrupt, or not a checkpoint of
        this project; the message names the file and what to do (exit code 2).
    """
    path = Path(path)

    def refuse(reason: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {path} {reason}. {_advice(path)}", path=path, reason=reason)

    if not path.is_file():
        raise refuse("does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, bad pickle, disallowed global, ...
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = next((line for line in lines if "WeightsUnpickler error" in line), lines[0] if lines else "")
        detail = detail.split(". ")[0]  # torch's first sentence says what broke; the rest is advice of its own
        raise refuse(f"cannot be read: it is truncated, corrupt, or holds objects that safe (weights_only) "
                     f"loading refuses ({type(exc).__name__}: {detail})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise refuse("is not an mcvae checkpoint")
    if checkpoint.get("format_version") != FORMAT_VERSION:
        raise refuse(f"has format version {checkpoint.get('format_version')!r}; this mcvae_framework reads "
                     f"version {FORMAT_VERSION}")
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise refuse(f"is incomplete (missing {', '.join(missing)})")
    return checkpoint


def _advice(path: Path) -> str:
    """What to do about an unusable checkpoint: go on from the run's previous checkpoint
    when it is there, else start afresh."""
    layout = RunLayout(path.parent.parent)
    fresh = (f"Delete it (or the whole run folder {layout.root}) and start a fresh run, "
             "or point --out-dir at another run folder.")
    if path == layout.last and layout.previous.is_file():
        return (f"The run's previous checkpoint {layout.previous} is kept: `mcvae train CONFIG --resume` goes "
                f"on from it. Or: {fresh[0].lower()}{fresh[1:]}")
    return fresh
