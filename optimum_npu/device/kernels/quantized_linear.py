"""Linear layers over quantized weights: ``torch.ops.npu.quantized_linear``, and the formats it reads.

A quantized weight [N, K] (N output, K input features) is stored as integer or fp8 values plus scales:

- ``int8``: int8 [N, K], one scale per group of ``group_size`` input features: scales [N, K / G];
- ``int4``: values in [-8, 7] packed two per byte (uint8 [N, K / 2], even feature in the low nibble,
  stored with an offset of 8), scales [N, K / G];
- ``fp8``: float8 e4m3 [N, K], one scale per output channel: scales [N, 1] (one group of K features).

All are symmetric round-to-nearest: ``scale = max|w| / qmax`` per group and ``q = round(w / scale)``.
The kernel dequantises (``q * scale``, in the input's dtype) and computes the linear with those
values, so its output carries the real quantization error. The format is read from the weight's
dtype (int8, uint8, float8_e4m3fn), so a graph node needs no format string.
"""

from __future__ import annotations

import torch
from torch.library import custom_op

FP8 = torch.float8_e4m3fn
#: Largest magnitude of each format's values.
QMAX = {"int8": 127.0, "int4": 7.0, "fp8": torch.finfo(FP8).max}
#: The storage dtype of each format, and back.
STORAGE = {"int8": torch.int8, "int4": torch.uint8, "fp8": FP8}
FORMAT_OF = {dtype: fmt for fmt, dtype in STORAGE.items()}
_INT4_OFFSET = 8


def quantize_weight(weight: torch.Tensor, fmt: str, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """weight [N, K] -> (values in the format's storage dtype, scales [N, K / G] in the weight's dtype).

    ``group_size`` is ignored by fp8 (per-channel: G = K). Works on ``meta`` tensors (shapes only).
    """
    out_features, in_features = weight.shape
    group = in_features if fmt == "fp8" else group_size
    grouped = weight.float().reshape(out_features, in_features // group, group)         # [N, K/G, G]
    scale = grouped.abs().amax(dim=-1) / QMAX[fmt]                                      # [N, K/G]
    scale = torch.where(scale > 0, scale, torch.ones_like(scale)).to(weight.dtype)
    scaled = grouped / scale.float()[..., None]                                         # [N, K/G, G]
    if fmt == "fp8":
        return scaled.reshape(out_features, in_features).to(FP8), scale
    values = scaled.round().clamp(-QMAX[fmt] - 1, QMAX[fmt]).reshape(out_features, in_features)
    if fmt == "int8":
        return values.to(torch.int8), scale
    nibbles = (values + _INT4_OFFSET).to(torch.uint8).reshape(out_features, in_features // 2, 2)
    return nibbles[..., 0] | (nibbles[..., 1] << 4), scale                             # [N, K/2]


def unpack_values(packed: torch.Tensor) -> torch.Tensor:
    """Stored values [N, K] (int4: [N, K / 2] unpacked) as float32 integers or fp8 values."""
    if packed.dtype == torch.uint8:
        low = (packed & 0x0F).to(torch.int16) - _INT4_OFFSET                            # [N, K/2]
        high = (packed >> 4).to(torch.int16) - _INT4_OFFSET
        return torch.stack([low, high], dim=-1).reshape(packed.shape[0], -1).float()    # [N, K]
    return packed.float()


def dequantize_weight(packed: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(stored values, scales [N, K / G]) -> the weight [N, K] in ``dtype`` (G is K / scale.shape[1])."""
    values = unpack_values(packed)                                                      # [N, K]
    out_features, in_features = values.shape
    groups = scale.shape[1]
    grouped = values.reshape(out_features, groups, in_features // groups)               # [N, K/G, G]
    return (grouped * scale.float()[..., None]).reshape(out_features, in_features).to(dtype)


def quantized_linear_kernel(input: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor,
                            bias: torch.Tensor | None = None) -> torch.Tensor:
    """input [..., K]; weight [N, K] int8 / fp8 or [N, K / 2] uint8 (int4); scale [N, K / G]; bias [N] -> [..., N]."""
    return torch.nn.functional.linear(input, dequantize_weight(weight, scale, input.dtype), bias)


quantized_linear = custom_op("npu::quantized_linear", quantized_linear_kernel, mutates_args=())


@quantized_linear.register_fake
def _quantized_linear_fake(input, weight, scale, bias=None):
    return input.new_empty((*input.shape[:-1], weight.shape[0]))
