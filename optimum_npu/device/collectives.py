"""Communicators that run the collective nodes of tensor-parallel graphs with real arithmetic.

Two back ends: ``InProcessGroup`` (every rank in this process, the default: the ranks run in
lockstep and the group reduces their operands between graph segments) and
``TorchDistributedGroup`` (every rank its own process, ``torch.distributed`` with gloo, so a
simulated node can span processes or machines: it hands its rank the kernels that replace
``npu.all_reduce`` / ``npu.all_gather``).
"""

from __future__ import annotations

from typing import Callable

import torch

from optimum_npu.schema import ALL_GATHER, ALL_REDUCE


class InProcessGroup:
    """All ranks in this process, run in lockstep by ``SegmentedProgram.run_group``: a collective
    receives every rank's operand at once and reduces in rank order (deterministic)."""

    def __init__(self, size: int):
        self.size = size

    @staticmethod
    def collective(node, per_rank_args: list[list]) -> list[torch.Tensor]:
        """Each rank's result of ``npu.all_reduce(x, n)`` or ``npu.all_gather(x, dim, n)``."""
        parts = [args[0] for args in per_rank_args]
        if node.op == ALL_REDUCE:
            total = parts[0].clone()
            for part in parts[1:]:
                total += part
            return [total] * len(parts)
        if node.op == ALL_GATHER:
            gathered = torch.cat(parts, dim=per_rank_args[0][1])
            return [gathered] * len(parts)
        raise ValueError(f"{node.op} is not a collective this group performs")


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
