"""Running one training over several processes (``torchrun --nproc_per_node N``).

:class:`DistributedContext` reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` from the
environment that torchrun sets, opens the process group (gloo on the CPU, nccl on CUDA)
and offers the few collectives the trainer needs. With one process every collective is a
no-op, so the trainer has a single code path. :func:`wrap_for_training` wraps the
trainer's :class:`~mcvae_framework.model.losses.LossModule` in DistributedDataParallel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..errors import TrainingError


@dataclass
class DistributedContext:
    """Where this process stands in a (possibly one-process) training job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    #: whether this context opened the process group (and so closes it).
    owns_group: bool = False

    @classmethod
    def from_env(cls) -> "DistributedContext":
        """Read torchrun's variables; absent variables mean a single process."""
        try:
            world_size = int(os.environ.get("WORLD_SIZE", "1"))
            rank = int(os.environ.get("RANK", "0"))
            local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
        except ValueError as exc:
            raise TrainingError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers ({exc})") from None
        return cls(rank=rank, world_size=world_size, local_rank=local_rank)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files and shows progress."""
        return self.rank == 0

    def setup(self, device: torch.device) -> None:
        """Join the process group (no-op for one process or an already open group)."""
        if not self.enabled or dist.is_initialized():
            return
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=self.rank, world_size=self.world_size)
        self.owns_group = True

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False

    # ------------------------------------------------------------ collectives

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over processes (in place; returned for convenience)."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def all_gather_objects(self, obj) -> list:
        """Every process's ``obj`` (picklable), in rank order."""
        if not self.enabled:
            return [obj]
        gathered = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def broadcast_module_state(self, module: nn.Module, src: int = 0) -> None:
        """Copy every parameter and buffer of ``module`` from rank ``src`` to the others."""
        if not self.enabled:
            return
        with torch.no_grad():
            for tensor in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(tensor.data, src=src)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def resolve_device(spec: str, context: DistributedContext) -> torch.device:
    """``training.device`` to a ``torch.device``: ``auto`` picks CUDA when present; under
    torchrun each process takes the GPU of its ``LOCAL_RANK``.

    :raises TrainingError: CUDA was asked for but is not available.
    """
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise TrainingError(
            f"training.device is {spec!r} but this machine has no usable CUDA device; "
            "set training.device to auto or cpu"
        )
    if spec == "cuda":
        index = context.local_rank if context.enabled else torch.cuda.current_device()
    else:
        index = int(spec.split(":", 1)[1])
        if context.enabled:
            index += context.local_rank  # cuda:N under torchrun: the N-th GPU is rank 0's
    if index >= torch.cuda.device_count():
        raise TrainingError(
            f"training.device {spec!r} (process {context.rank}) needs GPU {index}, but only "
            f"{torch.cuda.device_count()} are visible"
        )
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def wrap_for_training(loss_module: nn.Module, context: DistributedContext, device: torch.device) -> nn.Module:
    """``loss_module`` wrapped in DistributedDataParallel when there are several processes.

    ``find_unused_parameters=True`` because not every step uses every parameter: pretraining
    leaves the prior (and, depending on the loss mode, the pose head) without gradients.
    """
    if not context.enabled:
        return loss_module
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(loss_module, device_ids=device_ids, find_unused_parameters=True)
