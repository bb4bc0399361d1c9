"""Collective operators inserted by the tensor-parallel pass: ``npu.all_reduce`` and ``npu.all_gather``.

In a graph they are plain nodes; at run time the device runtime binds them to a
communicator (in-process or torch.distributed) for its rank. Executed unbound, a group
of one is the identity and anything larger is an error.
"""

from __future__ import annotations

import torch
from torch.library import custom_op


def _unbound(group_size: int, name: str) -> None:
    if group_size != 1:
        raise RuntimeError(f"npu.{name} over {group_size} devices ran outside a tensor-parallel runtime; load the "
                           "artifact with NPUModelForCausalLM.from_pretrained so each rank has a communicator")


@custom_op("npu::all_reduce", mutates_args=())
def all_reduce(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """Sum of ``x`` over the ``group_size`` devices of the tensor-parallel group."""
    _unbound(group_size, "all_reduce")
    return x.clone()


@all_reduce.register_fake
def _all_reduce_fake(x, group_size):
    return torch.empty_like(x)


@custom_op("npu::all_gather", mutates_args=())
def all_gather(x: torch.Tensor, dim: int, group_size: int) -> torch.Tensor:
    """Concatenation along ``dim`` of ``x`` from every device of the group, in rank order."""
    _unbound(group_size, "all_gather")
    return x.clone()


@all_gather.register_fake
def _all_gather_fake(x, dim, group_size):
    shape = list(x.shape)
    shape[dim] *= group_size
    return x.new_empty(shape)
