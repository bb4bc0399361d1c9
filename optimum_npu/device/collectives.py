"""Communicators that run the collective nodes of tensor-parallel graphs with real arithmetic.

One interface, two back ends: ``InProcessGroup`` (every rank a thread of this process, the
default) and ``TorchDistributedGroup`` (every rank its own process, ``torch.distributed``
with gloo, so a simulated node can span processes or machines). A communicator hands
each rank the kernels that replace ``npu.all_reduce`` / ``npu.all_gather`` in its program.
"""

from __future__ import annotations

import threading
from typing import Callable

import torch

ALL_REDUCE = "npu.all_reduce.default"
ALL_GATHER = "npu.all_gather.default"


class InProcessGroup:
    """Ranks are threads of this process; sums and gathers run in rank order (deterministic)."""

    def __init__(self, size: int):
        self.size = size
        self._slots: list[torch.Tensor | None] = [None] * size
        self._arrived = threading.Barrier(size)
        self._consumed = threading.Barrier(size)

    def _exchange(self, rank: int, x: torch.Tensor) -> list[torch.Tensor]:
        self._slots[rank] = x
        self._arrived.wait()
        parts = list(self._slots)
        self._consumed.wait()
        return parts

    def kernels(self, rank: int) -> dict[str, Callable]:
        def all_reduce(x: torch.Tensor, group_size: int) -> torch.Tensor:
            parts = self._exchange(rank, x)
            total = parts[0].clone()
            for part in parts[1:]:
                total += part
            return total

        def all_gather(x: torch.Tensor, dim: int, group_size: int) -> torch.Tensor:
            return torch.cat(self._exchange(rank, x), dim=dim)

        return {ALL_REDUCE: all_reduce, ALL_GATHER: all_gather}

    def abort(self) -> None:
        """Releases ranks blocked in a collective after another rank failed."""
        self._arrived.abort()
        self._consumed.abort()


class TorchDistributedGroup:
    """This process is one rank of an initialised ``torch.distributed`` group (gloo on CPU)."""

    def __init__(self):
        import torch.distributed as dist

        if not dist.is_initialized():
            raise RuntimeError("collectives='torch.distributed' needs torch.distributed.init_process_group(...) "
                               "to have been called in this process (backend 'gloo')")
        self.dist = dist
        self.size = dist.get_world_size()
        self.rank = dist.get_rank()

    def kernels(self, rank: int) -> dict[str, Callable]:
        dist = self.dist

        def all_reduce(x: torch.Tensor, group_size: int) -> torch.Tensor:
            total = x.contiguous().clone()
            dist.all_reduce(total)
            return total

        def all_gather(x: torch.Tensor, dim: int, group_size: int) -> torch.Tensor:
            parts = [torch.empty_like(x) for _ in range(self.size)]
            dist.all_gather(parts, x.contiguous())
            return torch.cat(parts, dim=dim)

        return {ALL_REDUCE: all_reduce, ALL_GATHER: all_gather}

    def abort(self) -> None:
        """Nothing to release: a failing rank's error surfaces in every process's collective."""
