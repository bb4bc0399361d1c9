"""Costs of the operators image models add: 2-D convolutions and dense (non-causal) attention.

Both are costed from their static shapes alone, through the schema argument names
(``ops.argument``), like every other op of ``cost.GraphCostModel``.
"""

from __future__ import annotations

import math
from typing import Callable

from optimum_npu.device.kernels import DENSE_ATTENTION
from optimum_npu.device.ops import nbytes
from optimum_npu.schema import Node

CONV2D = "aten.conv2d.default"
#: Ops costed here (``cost.GraphCostModel.op_cost`` hands them over).
IMAGE_OPS = (CONV2D, DENSE_ATTENTION)

ArgShape = Callable[[Node, str], tuple[list[int], str]]


def image_op_cost(node: Node, arg_shape: ArgShape, has_arg: Callable[[Node, str], bool]) -> tuple[float, float, str]:
    """(FLOPs, DRAM bytes, op class) of a convolution or a dense attention node.

    Convolution: ``2 * output elements * (in channels / groups) * kh * kw`` FLOPs (one multiply-add per
    weight tap), reading input, weight and bias once and writing the output: a GEMM (im2col view).
    Dense attention: ``4 * B * H * S * L * D`` FLOPs (QK^T and PV); flash-style, the score tiles stay on
    chip, so DRAM moves q, k, v, the mask and the output.
    """
    out_shape, out_dtype = node.meta["shape"], node.meta["dtype"]
    out_bytes = nbytes(out_shape, out_dtype)
    if node.op == CONV2D:
        weight_shape, weight_dtype = arg_shape(node, "weight")
        taps = math.prod(weight_shape[1:])                                   # Cin/groups * kh * kw
        moved = nbytes(*arg_shape(node, "input")) + nbytes(weight_shape, weight_dtype) + out_bytes
        if has_arg(node, "bias"):
            moved += nbytes(*arg_shape(node, "bias"))
        return 2.0 * math.prod(out_shape) * taps, float(moved), "gemm"
    (batch, heads, seq, head_dim), q_dtype = arg_shape(node, "query")
    keys = arg_shape(node, "key")[0][2]
    moved = nbytes(*arg_shape(node, "query")) + nbytes(*arg_shape(node, "key")) + nbytes(*arg_shape(node, "value"))
    if has_arg(node, "mask"):
        moved += nbytes(*arg_shape(node, "mask"))
    return 4.0 * batch * heads * seq * keys * head_dim, float(moved + out_bytes), "attention"
