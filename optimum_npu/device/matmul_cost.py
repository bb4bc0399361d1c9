"""Cost of matrix products (linear, addmm, mm, matmul, bmm and the quantized linear).

``2 x outputs x K`` FLOPs, ``K`` the reduction (the last dimension of the left operand); DRAM moves every operand
and the output once. Products with at most ``GEMV_MAX_ROWS`` output rows are matrix-vector (``gemv``, bandwidth
bound), the others ``gemm``. A quantized linear computes at the precision its weights allow on the spec and pays
for converting them first when the engine cannot take them as they are (``quant_cost``).
"""

from __future__ import annotations

import math
from typing import Callable

from optimum_npu.device.kernels import QUANTIZED_LINEAR
from optimum_npu.device.ops import GEMV_MAX_ROWS
from optimum_npu.device.quant_cost import dequant_flops, quantized_precision
from optimum_npu.device.spec import NPUSpec
from optimum_npu.schema import Node

__all__ = ["matmul_cost"]

ArgShape = Callable[[Node, str], tuple[list[int], str]]
#: The matmul operand whose last dimension is the reduction (schema argument names).
_MATMUL_LEFT = {"aten.linear.default": "input", "aten.addmm.default": "mat1", "aten.mm.default": "self",
                "aten.matmul.default": "self", "aten.bmm.default": "self", QUANTIZED_LINEAR: "input"}


def matmul_cost(node: Node, arg_shape: ArgShape, moved: int, spec: NPUSpec,
                dtype: str) -> tuple[float, float, str] | tuple[float, float, str, str, float]:
    """(FLOPs, DRAM bytes, op class[, precision, dequantisation FLOPs]) of a matrix product whose operands and
    output move ``moved`` bytes."""
    out_shape = node.meta["shape"]
    reduce_dim = arg_shape(node, _MATMUL_LEFT.get(node.op, "self"))[0][-1]
    kind = "gemv" if math.prod(out_shape[:-1]) <= GEMV_MAX_ROWS else "gemm"
    flops = 2.0 * math.prod(out_shape) * reduce_dim
    if node.op == QUANTIZED_LINEAR:
        weight_shape, weight_dtype = arg_shape(node, "weight")
        precision, dequantised = quantized_precision(weight_dtype, spec, dtype)
        extra = dequant_flops(weight_shape, weight_dtype) if dequantised else 0.0
        return flops, moved, kind, precision, extra
    return flops, moved, kind
