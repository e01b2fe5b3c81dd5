"""Evaluation across processes: ``torchrun --nproc-per-node N [--nnodes M ...] -m unmask.cli eval ...``.

Under torchrun (``WORLD_SIZE`` > 1 in the environment) the runner starts one process group (gloo for
its coordination; NCCL is registered for CUDA tensors but never used by the runner) and takes a
``Shard`` of the work: the grid's pending batches, built in the same order on every rank from the same
set of finished records (rank 0 reads it and broadcasts it), are dealt round-robin, batch ``j`` to rank
``j % world``. No example is decoded twice, none is lost, and each batch holds the same examples as in a
single-process run, so the records are the same. Each rank appends to its own ``records.rank{r}.jsonl``;
rank 0 folds them into ``records.jsonl`` at the end and alone writes the reports (``eval/records.py``).

Device: ``unmask.load`` puts each rank on ``cuda:LOCAL_RANK`` (``models/loading.resolve_device``).
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch

T = TypeVar("T")
# ranks wait for the slowest one at the end of a grid: hours on a large one. A rank that dies ends the
# others through torchrun, not through this timeout.
TIMEOUT = timedelta(hours=24)


class DistributedError(ValueError):
    """A torchrun environment that does not start a process group (a one-line error on the command line)."""


@dataclass(frozen=True)
class Shard:
    """This process's part of the work: rank ``rank`` of ``world`` processes (``Shard()``: all of it)."""

    rank: int = 0
    world: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world:
            raise ValueError(f"rank must be in [0, {self.world}), got {self.rank}")

    @property
    def main(self) -> bool:
        """Rank 0: the one that checks the folder, folds the records and writes the reports."""
        return self.rank == 0

    def owns(self, position: int) -> bool:
        """Item ``position`` of a sequence built the same way on every rank belongs to rank ``position % world``."""
        return position % self.world == self.rank

    def take(self, items: Sequence[T]) -> list[T]:
        """This rank's items of ``items``: every ``world``-th one from ``rank`` (disjoint, together complete)."""
        return list(items[self.rank::self.world])

    # collectives: no-ops for one process
    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank."""
        if self.world == 1:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: T) -> list[T]:
        """Every rank's ``value``, in rank order, on every rank."""
        if self.world == 1:
            return [value]
        values: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(values, value)
        return values

    def raise_any(self, error: str | None) -> None:
        """Raise on every rank if any rank has an ``error`` (the lowest rank's), so none waits for the others."""
        errors = [e for e in self.gather(error) if e]
        if errors:
            raise ValueError(errors[0])


def launched() -> tuple[int, int] | None:
    """``(rank, world)`` from torchrun's environment, or None when not launched by it (or with one process)."""
    world = os.environ.get("WORLD_SIZE")
    if world is None:
        return None
    try:
        size, rank = int(world), int(os.environ.get("RANK", ""))
    except ValueError:
        raise DistributedError(f"WORLD_SIZE={world!r} and RANK={os.environ.get('RANK')!r} must be integers; "
                               "launch with torchrun --nproc-per-node N") from None
    if not 0 <= rank < size:
        raise DistributedError(f"RANK={rank} is not in [0, WORLD_SIZE={size})")
    return None if size == 1 else (rank, size)


def current_shard(device: torch.device | str | None = None) -> Shard:
    """This process's shard: the whole grid alone; under torchrun, its rank's part (the process group is
    started on the first call, for ``device``'s type, and ended at exit)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return Shard(dist.get_rank(), dist.get_world_size())
    found = launched()
    if found is None:
        return Shard()
    rank, world = found
    start_process_group(torch.device(device) if device is not None else torch.device("cpu"), rank, world)
    return Shard(rank, world)


def start_process_group(device: torch.device, rank: int, world: int) -> None:
    dist = torch.distributed
    where = f"WORLD_SIZE={world}, RANK={rank}"
    if not dist.is_available():
        raise DistributedError(f"{where} is set but this torch build has no torch.distributed")
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise DistributedError(f"{where} is set but {' and '.join(missing)} not; launch with torchrun "
                               "--nproc-per-node N")
    cuda = device.type == "cuda"
    if cuda and device.index is not None:
        torch.cuda.set_device(device)
    backend = "cpu:gloo,cuda:nccl" if cuda and dist.is_nccl_available() else "gloo"
    try:
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=TIMEOUT)
    except Exception as err:  # an unreachable master, a port in use, ...
        raise DistributedError(f"{where} is set but the process group did not start ({type(err).__name__}: "
                               f"{str(err).splitlines()[0] if str(err) else ''})") from err
    atexit.register(_end)


def _end() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def is_main() -> bool:
    """True unless this process is a rank > 0 of a torchrun job (for printing and writing reports once)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"


def barrier() -> None:
    """Wait for every rank (nothing to wait for outside a process group)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
