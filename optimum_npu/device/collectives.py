"""Communicators that run the collective nodes of tensor-parallel graphs with real arithmetic.

Two back ends: ``InProcessGroup`` (every rank in this process, the default: the ranks run in
lockstep and the group reduces their operands between graph segments) and
``TorchDistributedGroup`` (every rank its own process, ``torch.distributed`` with gloo, so a
simulated node can span processes or machines: it hands its rank the kernels that replace
``npu.all_reduce`` / ``npu.all_gather`` and the expert-parallel ``npu.moe_dispatch`` / ``npu.all_to_all``).
"""

from __future__ import annotations

from typing import Callable

import torch

from optimum_npu.device.kernels.moe import dispatch_buffers
from optimum_npu.schema import ALL_GATHER, ALL_REDUCE, ALL_TO_ALL, MOE_DISPATCH


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
        if node.op == ALL_TO_ALL:
            return _exchange(parts)
        if node.op == MOE_DISPATCH:
            size = len(parts)
            sent = [dispatch_buffers(*args[:5], rank, size, *args[6:]) for rank, args in enumerate(per_rank_args)]
            return list(zip(_exchange([s[0] for s in sent]), _exchange([s[1] for s in sent])))
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

        def all_to_all(x: torch.Tensor, group_size: int) -> torch.Tensor:
            received = torch.empty_like(x)
            dist.all_to_all_single(received, x.contiguous())
            return received

        def moe_dispatch(hidden, router_logits, top_k, normalize, weights_in_input_dtype, group_size,
                         softmax_after_topk=False):
            sent = dispatch_buffers(hidden, router_logits, top_k, normalize, weights_in_input_dtype, rank, self.size,
                                    softmax_after_topk)
            return tuple(all_to_all(part, group_size) for part in sent)

        return {ALL_REDUCE: all_reduce, ALL_GATHER: all_gather, ALL_TO_ALL: all_to_all, MOE_DISPATCH: moe_dispatch}


def _exchange(parts: list[torch.Tensor]) -> list[torch.Tensor]:
    """All-to-all over in-process ranks: chunk s of rank d's result is chunk d of rank s's [n, ...] operand."""
    return [torch.stack([part[dest] for part in parts]) for dest in range(len(parts))]
