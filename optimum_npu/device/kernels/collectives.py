"""Collective operators inserted by the tensor-parallel pass (``npu.all_reduce``, ``npu.all_gather``) and the
expert-parallel pass (``npu.moe_dispatch``, ``npu.all_to_all``).

In a graph they are plain nodes; at run time the device runtime binds them to a
communicator (in-process or torch.distributed) for its rank. Executed unbound, a group
of one is the identity and anything larger is an error.
"""

from __future__ import annotations

import torch
from torch.library import custom_op

from optimum_npu.device.kernels.moe import dispatch_buffers, dispatch_shapes


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


@custom_op("npu::all_to_all", mutates_args=())
def all_to_all(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """x [n, ...] -> [n, ...]: chunk s of rank d's result is chunk d of rank s's ``x`` (n = ``group_size``)."""
    _unbound(group_size, "all_to_all")
    return x.clone()


@all_to_all.register_fake
def _all_to_all_fake(x, group_size):
    return torch.empty_like(x)


@custom_op("npu::moe_dispatch", mutates_args=())
def moe_dispatch(hidden: torch.Tensor, router_logits: torch.Tensor, top_k: int, normalize: bool,
                 weights_in_input_dtype: bool, group_size: int,
                 softmax_after_topk: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Expert-parallel dispatch: each rank routes its share of the (replicated) tokens and sends them, with their
    routing weights, to the ranks holding their experts (an all-to-all; ``kernels/moe.dispatch_buffers``).
    Returns what this rank received: tokens [n, C, H] and weights per local expert [n, C, E / n]."""
    _unbound(group_size, "moe_dispatch")
    return dispatch_buffers(hidden, router_logits, top_k, normalize, weights_in_input_dtype, 0, 1, softmax_after_topk)


@moe_dispatch.register_fake
def _moe_dispatch_fake(hidden, router_logits, top_k, normalize, weights_in_input_dtype, group_size,
                       softmax_after_topk=False):
    experts = router_logits.shape[-1]
    if group_size < 1 or experts % group_size or not 1 <= top_k <= experts:
        raise ValueError(f"npu.moe_dispatch over {group_size} devices cannot route top_k={top_k} of {experts} experts")
    return dispatch_shapes(hidden, router_logits, weights_in_input_dtype, group_size, softmax_after_topk)
