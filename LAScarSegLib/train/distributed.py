"""Training on several processes (torchrun): joining the process group, choosing each rank's
device, and keeping BatchNorm statistics identical across ranks."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist

from ..core.errors import InputError


# ------------------------------------------------------------------------------ distributed setup
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0



def init_distributed(device_kind: str) -> Dist:
    """Join a torchrun process group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()

    if not tdist.is_initialized():
        tdist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return Dist(tdist.get_rank(), tdist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))



def choose_device(requested: str, local_rank: int = 0) -> str:
    if requested == "auto":
        return f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("device 'cuda' requested but CUDA is not available here")
    if requested not in ("cpu",) and not requested.startswith("cuda"):
        raise InputError(f"unknown device {requested!r}; use auto, cpu or cuda")
    return requested



def average_buffers(model, world: int) -> None:
    """Make BatchNorm running statistics identical on every rank (mean over ranks)."""
    for buf in model.buffers():
        if torch.is_floating_point(buf):
            tdist.all_reduce(buf, op=tdist.ReduceOp.SUM)
            buf.div_(world)
        else:  # num_batches_tracked: identical by construction, keep rank 0's
            tdist.broadcast(buf, 0)
