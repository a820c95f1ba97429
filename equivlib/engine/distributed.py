"""One run over several processes with PyTorch's own machinery: ``torchrun`` starts the
processes and sets ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``; this module joins the process
group (NCCL on CUDA, gloo on the CPU), tells the loop who writes (rank 0 only) and sums
metrics over processes. A single process is the same code with ``world_size == 1``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Who this process is in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only the main process (rank 0) writes checkpoints, results and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def all_reduce_sum(self, values: list[float],
                       device: torch.device | str = "cpu") -> list[float]:
        """Element-wise sum over processes (float64); the values themselves with one process."""
        if not self.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def launched_by_torchrun() -> bool:
    """True when the environment of ``torchrun`` (or another launcher) names a world."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: str) -> tuple[DistContext, str]:
    """Join the process group if launched with ``WORLD_SIZE > 1``; returns the context and
    this process's device (``cuda`` becomes ``cuda:LOCAL_RANK``)."""
    if not launched_by_torchrun():
        return DistContext(), device
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistContext(rank, world, local), device


def shutdown_distributed() -> None:
    """Leave the process group (at the end of a run started by torchrun)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
