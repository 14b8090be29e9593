"""Training beyond one process: the process group from ``torchrun``, the sharded batch order, reductions.

One rule makes a multi-process run equal a single-process run with the same global batch: every
rank draws the same global permutation and the same global batches, takes an interleaved shard of
each (positions ``rank, rank + W, ...``, as ``torch.utils.data.DistributedSampler`` does), and scales
its loss so that DistributedDataParallel's gradient average is the mean over the global batch.
"""
from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from robust.errors import InputError
from robust.seeding import derive_seed, make_generator


@dataclass(frozen=True)
class World:
    """Where this process stands: its rank among ``size`` processes (``size == 1``: no distribution)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def current_world() -> World:
    """The world of an initialised process group, or the single-process world."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return World()


def setup_from_env(device: str = "auto") -> tuple[World, str]:
    """Join the process group ``torchrun`` describes in the environment (no-op for one process).

    Returns the world and the device this rank should use: ``cuda:<local_rank>`` with NCCL when CUDA
    is available (and ``device`` is not ``cpu``), else the CPU with gloo.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(), device
    if not dist.is_available():
        raise InputError("WORLD_SIZE", "1 (this torch build has no torch.distributed)", size)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    else:
        device = "cpu"
    return current_world(), device


def teardown() -> None:
    """Leave the process group; the DDP wrappers (which hold it) are collected first, while the
    interpreter is whole, so gloo's threads are not torn down during interpreter finalisation."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def all_reduce_sum(values: torch.Tensor, world: World) -> torch.Tensor:
    """Sum a tensor over ranks (returned as a new tensor; the input is left alone)."""
    if not world.distributed:
        return values
    out = values.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


class ShardedBatches:
    """The distributed sampler: a seeded permutation per epoch cut into global batches, sharded by rank.

    ``batches(epoch)`` yields ``(global_indices, local_positions)``: the dataset indices of a whole
    global batch (identical on every rank) and the positions within it that this rank trains on.
    The order depends only on ``(seed, epoch)``, so a resumed run sees the same batches.
    A final batch smaller than the number of ranks is dropped (a rank without samples cannot take
    part in the gradient all-reduce); ``drop_last`` drops any incomplete final batch.
    """

    def __init__(self, n: int, batch_size: int, world: World, seed: int, drop_last: bool = False):
        if n < 1:
            raise InputError("data", "at least one training image", n)
        if batch_size < world.size:
            raise InputError("batch_size", f"at least the number of processes ({world.size})", batch_size)
        self.n = int(n)
        self.batch_size = int(batch_size)
        self.world = world
        self.seed = int(seed)
        self.drop_last = bool(drop_last)

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        keep_rest = rest and not self.drop_last and rest >= self.world.size
        return full + (1 if keep_rest else 0)

    def order(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.n, generator=make_generator(derive_seed(self.seed, "train-order", epoch)))

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.order(epoch)
        for b in range(start, len(self)):
            global_idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            local = torch.arange(self.world.rank, global_idx.numel(), self.world.size)
            yield global_idx, local

    def total_steps(self, epochs: int) -> int:
        return len(self) * epochs

    def steps_per_epoch(self) -> int:
        return len(self)


def shard_range(n: int, world: World) -> torch.Tensor:
    """Indices ``rank, rank + W, ...`` of ``n`` items: this rank's share of an evaluation set."""
    return torch.arange(world.rank, n, world.size)
