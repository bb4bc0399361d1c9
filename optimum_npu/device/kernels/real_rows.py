"""Which rows of a graph call's token grid are real, so that row-wise kernels can skip the padding.

A decoder call's tokens form a ``[B, S]`` grid (its ``positions``, -1 = padding). When the real
tokens are the first ``count`` of the grid in row-major order (as the step runner lays out a
prefill chunk and a decode batch) and nothing the caller reads depends on the padding rows, the
engine runs the call inside ``real_rows(grid, count)``; the linear kernel then computes the first
``count`` rows and leaves zeros in the rest. The real rows' values do not depend on the padding
rows (only attention mixes rows, and padding neither writes the cache nor is attended to), so
what the caller reads is unchanged up to rounding, and the simulated cost is still that of the
whole static grid: only host time is saved.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

import torch

from optimum_npu.schema import ALL_TO_ALL, MOE_DISPATCH, Graph

#: Ops through which padding rows reach what the caller reads (routing statistics, expert dispatch): the MoE
#: kernels (``kernels/__init__``'s MOE and MOE_EXPERTS) and expert-parallel collectives.
_PADDING_OBSERVERS = {"npu.moe.default", "npu.moe_experts.default", MOE_DISPATCH, ALL_TO_ALL}

_EXTENT: ContextVar[tuple[tuple[int, ...], int] | None] = ContextVar("npu_real_rows", default=None)


@contextmanager
def real_rows(grid: tuple[int, ...], count: int):
    """Inside the block (this thread), tensors whose leading dims are ``grid`` have real rows only in the
    first ``count`` of its row-major order."""
    token = _EXTENT.set((tuple(grid), count))
    try:
        yield
    finally:
        _EXTENT.reset(token)


def real_row_count(leading: tuple[int, ...]) -> int | None:
    """The real rows of a tensor with leading dims ``leading`` when it spans the call's grid with padding
    after them; None when every row may be real (no grid set, another shape, no padding)."""
    extent = _EXTENT.get()
    if extent is None or tuple(leading) != extent[0]:
        return None
    return extent[1]


def skips_padding(graph: Graph) -> bool:
    """Whether a call of ``graph`` may leave its padding rows uncomputed (``real_rows``): one output
    (the logits, read at real rows only) and no op whose statistics count the padding rows."""
    return len(graph.outputs) == 1 and not any(node.op in _PADDING_OBSERVERS for node in graph.nodes)


def real_prefix(positions: torch.Tensor) -> int | None:
    """The number of real tokens of ``positions`` [B, S] (-1 = padding) when they are the first ones in row-major
    order and padding follows them; None otherwise (no padding, or padding between real tokens)."""
    real = (positions >= 0).flatten()
    count = int(real.sum())
    if count == real.numel() or not bool(real[:count].all()):
        return None
    return count
