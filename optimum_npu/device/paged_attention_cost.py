"""Per-call cost of the paged and sliding-window attention kernels (decoder self-attention).

Their cost depends on the run-time context, summarised by a call's *extent*: the new tokens, and for
each flash partition length of the graph the keys read (each row's context rounded up to whole
partitions, summed over rows). ``cost.GraphCostModel`` costs them per call through these functions.
"""

from __future__ import annotations

from typing import Callable

import torch

from optimum_npu.device.ops import argument, nbytes
from optimum_npu.schema import Node, dtype_from_name

__all__ = ["SLIDING_WINDOW_ATTENTION", "attention_extent", "attention_tile_bytes", "paged_attention_cost"]

SLIDING_WINDOW_ATTENTION = "npu.sliding_window_attention.default"

ArgShape = Callable[[Node, str], tuple[list[int], str]]
Extent = tuple[int, tuple[int, ...]]


def cache_shape(node: Node, arg_shape: ArgShape) -> tuple[list[int], str]:
    """(shape, dtype) of the keys an attention node reads: the ring of a sliding window, else the paged pool."""
    return arg_shape(node, "k_ring" if node.op == SLIDING_WINDOW_ATTENTION else "k_cache")


def attention_extent(positions: torch.Tensor, partitions: list[int]) -> Extent:
    """The extent of a call with query positions [B, S] (-1 = padding) over flash partition lengths."""
    new_tokens = int((positions >= 0).sum())
    if not partitions:
        return new_tokens, ()
    context = (positions.max(dim=1).values + 1).tolist()                          # 0 for padding rows
    return new_tokens, tuple(sum(-(-ctx // p) * p for ctx in context) for p in partitions)


def paged_attention_cost(node: Node, arg_shape: ArgShape, extent: Extent, partitions: list[int],
                         fused: bool) -> tuple[float, float, str]:
    """(FLOPs, DRAM bytes, op class) of one attention call of the given extent.

    Eager paged attention reads the whole static cache (``blocks_per_seq x block_size`` keys); flash
    attention reads ``ceil(context / partition) x partition`` keys per sequence; the sliding-window
    kernel reads its ring plus the new tokens. Unfused, the score matrix [B, H, S, keys] is written,
    read by the softmax, written and read again.
    """
    q_shape, q_dtype = arg_shape(node, "query")
    k_shape, cache_dtype = cache_shape(node, arg_shape)
    batch, seq, heads, head_dim = q_shape
    kv_heads = k_shape[1]
    new_tokens, partition_keys = extent
    if node.op == SLIDING_WINDOW_ATTENTION:
        keys = (k_shape[2] + seq) * batch
    else:
        partition = argument(node, "partition_len", 0)
        if partition:
            keys = partition_keys[partitions.index(partition)]
        else:
            keys = arg_shape(node, "block_table")[0][1] * k_shape[2] * batch
    itemsize = dtype_from_name(cache_dtype).itemsize
    flops = 4.0 * heads * head_dim * seq * keys
    kv_bytes = (keys + new_tokens) * 2 * kv_heads * head_dim * itemsize
    if argument(node, "k_scale") is not None:  # fp8 cache: a float32 scale per cached token and head
        kv_bytes += (keys + new_tokens) * 2 * kv_heads * 4
    scores = 0 if fused else 4 * heads * seq * keys * dtype_from_name(q_dtype).itemsize
    return flops, kv_bytes + 2 * nbytes(q_shape, q_dtype) + scores, "attention"


def attention_tile_bytes(node: Node, arg_shape: ArgShape) -> int:
    """SRAM a flash kernel needs: one head's scores for the graph's queries against one key tile."""
    q_shape, q_dtype = arg_shape(node, "query")
    k_shape, _ = cache_shape(node, arg_shape)
    if node.op == SLIDING_WINDOW_ATTENTION:
        keys = k_shape[2] + q_shape[1]
    else:
        partition = argument(node, "partition_len", 0)
        keys = partition or arg_shape(node, "block_table")[0][1] * k_shape[2]
    return q_shape[1] * keys * dtype_from_name(q_dtype).itemsize
