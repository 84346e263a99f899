"""Data parallelism for training: process groups, shards of a global batch, reductions, spawning.

One global batch of ``B`` examples is split into ``world`` contiguous shards (sizes differ by at most
one; a shard may be empty at the end of an epoch). Each rank's loss is its shard's summed loss times
``world / B``: DDP averages gradients over ranks, so the averaged gradient is the gradient of the
global-batch mean, whatever the shard sizes. Two launches are supported: ``qucnn train --nproc N``
(:func:`spawn`, ``torch.multiprocessing``) and ``torchrun --nproc-per-node N -m qucnn train``
(:func:`context_from_env`, ``env://`` rendezvous). gloo on the CPU, nccl on CUDA.

Example:
    >>> ctx = DistContext()  # one process
    >>> shard_of(torch.arange(5), ctx)
    (tensor([0, 1, 2, 3, 4]), 0)
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: ``rank`` of ``world`` processes, computing on ``device``."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """More than one process."""
        return self.world > 1


def launched_by_torchrun() -> bool:
    """True inside a process started by torchrun (or another ``env://`` launcher) with world size > 1."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def _rank_device(device: torch.device, local_rank: int) -> torch.device:
    if device.type != "cuda":
        return device
    dev = torch.device("cuda", local_rank)
    torch.cuda.set_device(dev)
    return dev


def context_from_env(device: torch.device) -> DistContext:
    """The current context: an initialised process group, a torchrun launch (initialised here), or one process."""
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        return DistContext(rank, world, _rank_device(device, local) if world > 1 else device)
    if launched_by_torchrun():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        dev = _rank_device(device, local)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://")
        return DistContext(dist.get_rank(), dist.get_world_size(), dev)
    return DistContext(0, 1, device)


def init_spawned(rank: int, world: int, port: int, device: torch.device) -> DistContext:
    """Join the process group of a :func:`spawn` launch (rendezvous on 127.0.0.1:``port``)."""
    dev = _rank_device(device, rank)
    # share the cores instead of oversubscribing them
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    return DistContext(rank, world, dev)


def shutdown(ctx: DistContext, barrier: bool = False) -> None:
    """Leave the process group; with ``barrier``, only once every rank got here (a normal finish: no rank
    tears the group down while another still talks to it). Not after an error: a dead peer would hang it."""
    if ctx.enabled and dist.is_initialized():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for the rendezvous of spawned processes)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(worker: Callable[..., Any], nproc: int, args: tuple) -> None:
    """Run ``worker(rank, nproc, port, *args)`` in ``nproc`` fresh processes and wait for all of them."""
    mp.spawn(worker, args=(nproc, free_port()) + tuple(args), nprocs=nproc, join=True)


def shard_of(indices: torch.Tensor, ctx: DistContext) -> tuple[torch.Tensor, int]:
    """This rank's contiguous shard of a global batch ``indices`` ``(B,)`` and the shard's offset in it."""
    if not ctx.enabled:
        return indices, 0
    sizes = [len(part) for part in torch.tensor_split(indices, ctx.world)]
    offset = sum(sizes[: ctx.rank])
    return indices[offset: offset + sizes[ctx.rank]], offset


def all_sum(values: list[float], ctx: DistContext, dtype: torch.dtype = torch.float64) -> list[float]:
    """Sum a short list of numbers over ranks (identity on one process)."""
    if not ctx.enabled:
        return list(values)
    t = torch.tensor(values, dtype=dtype, device=ctx.device)
    dist.all_reduce(t)
    return t.tolist()


def gather_objects(obj: Any, ctx: DistContext) -> list:
    """Every rank's ``obj``, in rank order (``[obj]`` on one process)."""
    if not ctx.enabled:
        return [obj]
    out: list = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out


def wrap_ddp(model: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """``model`` wrapped in DistributedDataParallel when several processes run (else unchanged)."""
    if not ctx.enabled:
        return model
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


__all__ = ["DistContext", "all_sum", "context_from_env", "free_port", "gather_objects", "init_spawned",
           "launched_by_torchrun", "shard_of", "shutdown", "spawn", "wrap_ddp"]
