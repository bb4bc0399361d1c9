"""Cost of cross-attention (encoder-decoder models): decoder queries over each row's encoder keys/values.

The keys/values are stored per sequence (computed once by the encoder step); the prefill call also
writes them (its ``key`` argument is a tensor), so it moves them twice. Costed from static shapes
through the schema argument names, like every op of ``cost.GraphCostModel``.
"""

from __future__ import annotations

from typing import Callable

from optimum_npu.device.kernels import CROSS_ATTENTION
from optimum_npu.device.ops import argument, nbytes
from optimum_npu.schema import Node

__all__ = ["CROSS_ATTENTION", "cross_attention_cost"]

ArgShape = Callable[[Node, str], tuple[list[int], str]]


def cross_attention_cost(node: Node, arg_shape: ArgShape) -> tuple[float, float, str]:
    """(FLOPs, DRAM bytes, op class) of an ``npu.cross_attention`` node.

    ``4 * B * H * S * L * D`` FLOPs (QK^T and PV over the ``L`` encoder positions); DRAM moves the rows'
    keys and values (plus their write at prefill), the queries and the output.
    """
    (batch, seq, heads, head_dim), q_dtype = arg_shape(node, "query")      # query [B, S, H, D]
    (_, _, enc_len, _), cache_dtype = arg_shape(node, "k_cache")           # k_cache [rows, H, L, D]
    kv_bytes = 2 * nbytes([batch, heads, enc_len, head_dim], cache_dtype)
    written = kv_bytes if argument(node, "key") is not None else 0
    return (4.0 * batch * heads * seq * enc_len * head_dim,
            kv_bytes + written + 2 * nbytes([batch, seq, heads, head_dim], q_dtype), "attention")
