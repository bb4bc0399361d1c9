"""Cost of convolutions: an implicit GEMM per output position.

A 1-D or 2-D convolution with ``C_in / groups`` input channels and a ``kh x kw`` kernel computes, for each
of its ``B x C_out x H_out x W_out`` outputs, a dot product of ``C_in / groups x kh x kw`` terms:
``flops = 2 x outputs x C_in / groups x kh x kw``. The NPU runs it as a matmul (im2col tiles built
on chip), so it is a ``gemm`` for the roofline; its DRAM traffic is its input, its weights and its
output, each moved once.
"""

from __future__ import annotations

import math
#: Convolution overloads costed here (schema argument names: ``input``, ``weight``, ``groups``).
CONV_OPS = frozenset({"aten.conv1d.default", "aten.conv2d.default"})


def conv_flops(out_shape: list[int], weight_shape: list[int]) -> float:
    """``out_shape`` [B, C_out, *spatial]; ``weight_shape`` [C_out, C_in / groups, *kernel] (a 2-D kernel's
    ``kh x kw``, a 1-D kernel's ``k``)."""
    return 2.0 * math.prod(out_shape) * math.prod(weight_shape[1:])

