"""What a quantized linear costs besides its matmul: the precision it computes in, and the dequantisation.

A spec with an engine for the weights' format (``peak_flops`` has ``int8`` / ``int4`` / ``float8``) runs the
matmul at that engine's peak, reading the quantized bytes from DRAM. A spec without one (int4 on every
preset, int8 on the GPUs' presets here) dequantises each weight tile on chip to its native compute dtype
first: the matmul runs at the native peak, and the dequantisation (a multiply and a conversion per weight
element, assumed at the same rate: no public per-engine figure) is shown as its own profiler category,
``Dequantize``. The DRAM traffic is the quantized bytes either way (the tiles never go back to DRAM).
"""

from __future__ import annotations

import math

from optimum_npu.device.spec import NPUSpec

#: Storage dtype of quantized weights -> the ``peak_flops`` key of the engine that computes with them.
ENGINE_OF_STORAGE = {"int8": "int8", "uint8": "int4", "float8_e4m3fn": "float8"}
#: Stored values per element of each storage dtype (int4 packs two per byte).
VALUES_PER_ELEMENT = {"uint8": 2}
#: Operations per weight element to dequantise it (scale multiply, conversion).
DEQUANT_OPS_PER_VALUE = 2.0


def quantized_precision(weight_dtype: str, spec: NPUSpec, compute_dtype: str) -> tuple[str, bool]:
    """(the precision whose peak the matmul runs at, whether the weights are dequantised to it first)."""
    engine = ENGINE_OF_STORAGE.get(weight_dtype)
    if engine is not None and engine in spec.peak_flops:
        return engine, False
    return compute_dtype, True


def dequant_flops(weight_shape, weight_dtype: str) -> float:
    """Operations to dequantise a stored weight (every value, once per call)."""
    return DEQUANT_OPS_PER_VALUE * math.prod(weight_shape) * VALUES_PER_ELEMENT.get(weight_dtype, 1)
