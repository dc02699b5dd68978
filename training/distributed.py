"""Multi-process training with PyTorch DistributedDataParallel, launched by ``torchrun``.

``torchrun --nproc-per-node 2 -m cspon_rs.training --config C.yaml --out runs/x`` runs the same config in two
processes (gloo on the CPU, NCCL on GPUs, one GPU per process). The effective batch stays
``optim.batch_size``: batch *k* of an epoch is drawn from ``rng([seed, epoch, k])`` exactly as in one process and
each process trains on its share of it (``batch[rank::world]``), DDP averaging the gradients. Process 0 alone
validates, writes checkpoints and logs; the others wait for it, and every stop decision (time budget, early
stopping) is agreed by all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from cspon_rs.errors import ConfigError

__all__ = ["DistContext", "agree", "barrier", "broadcast_float", "init_distributed", "mean_over_processes", "shutdown"]


@dataclass(frozen=True)
class DistContext:
    """This process's place in a run: ``rank`` of ``world`` processes (``world == 1``: not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        """True when running under ``torchrun`` with more than one process."""
        return self.world > 1

    @property
    def main(self) -> bool:
        """True in the process that validates and writes files (rank 0)."""
        return self.rank == 0


def init_distributed(device_type: str) -> DistContext:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``...).

    Returns a one-process context when not launched by ``torchrun`` (or with one process).

    Raises:
        ConfigError: NCCL asked for (CUDA device) with fewer GPUs than local processes.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"process {local_rank} has no GPU ({torch.cuda.device_count()} visible); start at most one "
                "process per GPU (torchrun --nproc-per-node) or use --device cpu"
            )
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistContext(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank, backend=backend)


def agree(ctx: DistContext, flag: bool, device: torch.device) -> bool:
    """True in every process when ``flag`` is true in any (one all-reduce of one number)."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_float(ctx: DistContext, value: float, device: torch.device) -> float:
    """Process 0's ``value`` in every process."""
    if not ctx.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return float(t.item())


def mean_over_processes(ctx: DistContext, value: float, device: torch.device) -> float:
    """The mean of ``value`` over all processes (e.g. the epoch's training loss of each share)."""
    if not ctx.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / ctx.world


def barrier(ctx: DistContext) -> None:
    """Wait for every process (no-op in one process)."""
    if ctx.enabled:
        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    """Leave the process group (no-op in one process)."""
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
