"""Cost of dense (non-causal) attention over a static bucket: diffusion models, text and vision encoders.

Costed from its static shapes alone, through the schema argument names, like every other op of
``cost.GraphCostModel`` (convolutions are in ``conv_cost``).
"""

from __future__ import annotations

from typing import Callable

from optimum_npu.device.kernels import DENSE_ATTENTION
from optimum_npu.device.ops import nbytes
from optimum_npu.schema import Node

__all__ = ["DENSE_ATTENTION", "dense_attention_cost", "segment_attention_cost"]

ArgShape = Callable[[Node, str], tuple[list[int], str]]


def dense_attention_cost(node: Node, arg_shape: ArgShape,
                         has_arg: Callable[[Node, str], bool]) -> tuple[float, float, str]:
    """(FLOPs, DRAM bytes, op class) of an ``npu.dense_attention`` node.

    ``4 * B * H * S * L * D`` FLOPs (QK^T and PV); flash-style, the score tiles stay on chip, so DRAM
    moves q, k, v, the mask and the output.
    """
    (batch, heads, seq, head_dim), _ = arg_shape(node, "query")   # query [B, H, S, D]
    keys = arg_shape(node, "key")[0][2]                            # key [B, H, L, D]
    moved = nbytes(*arg_shape(node, "query")) + nbytes(*arg_shape(node, "key")) + nbytes(*arg_shape(node, "value"))
    if has_arg(node, "mask"):
        moved += nbytes(*arg_shape(node, "mask"))
    moved += nbytes(node.meta["shape"], node.meta["dtype"])
    return 4.0 * batch * heads * seq * keys * head_dim, float(moved), "attention"


def segment_attention_cost(node: Node, arg_shape: ArgShape) -> tuple[float, float, str]:
    """(FLOPs, DRAM bytes, op class) of an ``npu.segment_attention`` node (packed variable-length segments).

    Flash-style like dense attention: ``4 * H * S * S * D`` FLOPs over the packed sequence, the score
    tiles on chip; DRAM moves q, k, v and the output (four [H, S, D] tensors).
    """
    (heads, seq, head_dim), q_dtype = arg_shape(node, "query")           # query [H, S, D]
    return 4.0 * heads * seq * seq * head_dim, 4 * nbytes([heads, seq, head_dim], q_dtype), "attention"
