"""Achievable-efficiency factors of the cost model, with the published measurement behind each.

Real kernels do not reach a datasheet's peak. The roofline of an op is
``max(flops / (peak * compute), bytes / (bandwidth * bandwidth_factor))`` with factors per
op class:

- ``gemm``: a matmul with more than ``GEMV_MAX_ROWS`` output rows (prefill, large batches);
- ``gemv``: a decode-shaped matmul (a few rows): streams its weight once, bandwidth-bound;
- ``elementwise``: norms, activations, casts, gathers: streaming, bandwidth-bound;
- ``attention``: the attention kernels (flash-style when fused).

Only NVIDIA A100 and H100 have public per-class measurements; the NPU presets (and custom
specs) borrow the A100-80GB table and say so. Each factor carries its source as text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

OP_CLASSES = ("gemm", "gemv", "elementwise", "attention")

#: Host CPU throughput for host fallback ops (assumed, not calibrated: a server CPU with
#: AVX-512 sustains on the order of 1 TFLOP/s fp32 across its cores).
HOST_FLOPS = 1e12


@dataclass(frozen=True)
class Efficiency:
    """Fractions of peak compute and peak DRAM bandwidth an op class achieves, and why."""

    compute: float
    bandwidth: float
    source: str


# ---- sources (published measurements) ------------------------------------------------------------
_MAMF_A100 = ("stas00/ml-engineering, compute/accelerator/README.md, 'Maximum Achievable Matmul FLOPS' table: "
              "A100 SXM BF16 matmul 271.2 of 312 TFLOPS = 86.9%")
_MAMF_H100 = ("stas00/ml-engineering, 'Maximum Achievable Matmul FLOPS' table: H100 SXM BF16 matmul 794.5 of "
              "989 TFLOPS = 80.3%")
_STREAM_A100_80 = ("pytorch-labs/gpt-fast README: on A100-80GB 'empirically, peak bandwidth is about 1700 GB/s' "
                   "= 83% of 2039 GB/s")
_STREAM_A100_40 = ("PTsolvers/gpu-workshop-JuliaCon23 issue #7: measured memcopy 1355 GB/s on A100-40GB = 87% of "
                   "1555 GB/s")
_DECODE_A100 = ("pytorch-labs/gpt-fast README: Llama-2-7B bf16 batch-1 decode on A100-80GB moves 1397 GB/s = "
                "68.5% of 2039 GB/s (whole decode step, weight GEMVs dominate)")
_FA2_A100 = ("FlashAttention-2 (Dao 2023, arXiv:2307.08691): 50-73% of peak FLOPs/s on A100; midpoint 0.62. "
             "Decode attention bandwidth: the gpt-fast decode figure")
_FA3_H100 = ("FlashAttention-3 (Shah et al. 2024, arXiv:2407.08608): up to 740 TFLOPS FP16 = 75% of H100 peak. "
             "Bandwidth borrowed from the A100-80GB gpt-fast decode figure")
_ELEMENTWISE = "; compute factor irrelevant (1 FLOP per >= 4 bytes: always bandwidth-bound), set to the GEMM one"


def _table(gemm: float, attention: float, stream: float, decode: float, sources: tuple[str, ...]) -> dict:
    mamf, stream_src, decode_src, attention_src = sources
    return {
        "gemm": Efficiency(gemm, stream, f"compute: {mamf}; bandwidth: {stream_src}"),
        "gemv": Efficiency(gemm, decode, f"compute: {mamf}; bandwidth: {decode_src}"),
        "elementwise": Efficiency(gemm, stream, f"bandwidth: {stream_src}{_ELEMENTWISE}"),
        "attention": Efficiency(attention, decode, attention_src),
    }


_A100_80 = _table(0.87, 0.62, 0.83, 0.69, (_MAMF_A100, _STREAM_A100_80, _DECODE_A100, _FA2_A100))
_A100_40 = _table(0.87, 0.62, 0.87, 0.69, (_MAMF_A100, _STREAM_A100_40, _DECODE_A100 + " (80GB figure, borrowed)",
                                           _FA2_A100))
_H100 = _table(0.80, 0.75, 0.83, 0.69, (_MAMF_H100, _STREAM_A100_80 + " (A100 figure, borrowed: no H100 streaming "
                                        "measurement found)", _DECODE_A100 + " (A100 figure, borrowed)", _FA3_H100))
#: H200 is the H100's GH100 chip with HBM3e: the H100 factors, borrowed until bench_gpu_calibration.py has run on one.
_H200 = {cls: Efficiency(e.compute, e.bandwidth, e.source + " [borrowed for h200-sxm: same GH100 compute, no "
                          "H200 per-op measurement yet]") for cls, e in _H100.items()}


@lru_cache(maxsize=None)
def _borrowed(name: str) -> dict:
    note = f" [borrowed for {name}: no per-op efficiency is published for it; A100-80GB measurements used]"
    return {cls: Efficiency(e.compute, e.bandwidth, e.source + note) for cls, e in _A100_80.items()}


#: Factors per spec preset name. Specs not listed (custom JSON specs) borrow the A100-80GB table.
CALIBRATION: dict[str, dict[str, Efficiency]] = {
    "a100-80gb": _A100_80,
    "a100-40gb": _A100_40,
    "h100-sxm": _H100,
    "h200-sxm": _H200,
    **{name: _borrowed(name) for name in ("atom", "rebel-quad", "rngd", "inferentia2")},
}


# ---- attention in prefill on GPUs --------------------------------------------------------------------
#: Specs whose attention kernels keep the score matrix on chip whatever ``sram_bytes`` says: on A100/H100
#: the attention of PyTorch SDPA, vLLM and TensorRT-LLM is FlashAttention-2/3 (tiles in shared memory).
_FLASH_GPU = ("FlashAttention-2 (arXiv:2307.08691) on A100 and FlashAttention-3 (arXiv:2407.08608) on H100 are the "
              "attention kernels of PyTorch SDPA / vLLM / TensorRT-LLM: scores stay in shared memory")
FLASH_ATTENTION_SPECS: dict[str, str] = {name: _FLASH_GPU for name in ("a100-40gb", "a100-80gb", "h100-sxm",
                                                                      "h200-sxm")}
#: FlashAttention-3 forward, H100 SXM, bf16, head dim 128, batch x length = 16k tokens, TFLOP/s by query length:
#: pytorch/benchmark commit ff65cb6 (PR #2391, "Fix dimension order for FlashAttention-3"), flash_v3 column.
FA3_H100_TFLOPS = ((512, 430.32), (1024, 517.099), (2048, 565.544), (4096, 590.233), (8192, 614.234),
                   (16384, 620.73))
_H100_PEAK_TFLOPS = 989.0
#: Long-sequence plateau of the fraction of peak per spec: H100/H200 the measured 16k point; A100 the top of
#: FlashAttention-2's published 50-73% of peak (its length dependence borrowed from the H100 sweep above).
_ATTENTION_PLATEAU = {"a100-40gb": 0.73, "a100-80gb": 0.73, "h100-sxm": 620.73 / _H100_PEAK_TFLOPS,
                      "h200-sxm": 620.73 / _H100_PEAK_TFLOPS}


def keeps_attention_scores_on_chip(spec_name: str) -> bool:
    """Whether the spec's attention kernels are flash-style regardless of its declared SRAM (``FLASH_ATTENTION_SPECS``)."""
    return spec_name in FLASH_ATTENTION_SPECS


def prefill_attention_compute(spec_name: str, queries: int) -> float:
    """Fraction of peak FLOP/s of flash attention over ``queries`` query tokens per sequence.

    Short sequences leave the GPU's SMs partly idle (fewer query tiles per head): the measured FlashAttention-3
    throughput grows from 430 TFLOP/s at 512 tokens to 621 at 16k (``FA3_H100_TFLOPS``). For the specs of
    ``_ATTENTION_PLATEAU`` the fraction is the plateau times that measured curve (log-linear between its
    points, its end values outside: below 512 tokens it is not extrapolated); other specs keep their constant
    ``efficiency(spec, "attention").compute``.
    """
    plateau = _ATTENTION_PLATEAU.get(spec_name)
    if plateau is None:
        return efficiency(spec_name, "attention").compute
    points = FA3_H100_TFLOPS
    if queries <= points[0][0]:
        tflops = points[0][1]
    elif queries >= points[-1][0]:
        tflops = points[-1][1]
    else:
        (x0, y0), (x1, y1) = next((a, b) for a, b in zip(points, points[1:]) if a[0] <= queries <= b[0])
        t = (math.log2(queries) - math.log2(x0)) / (math.log2(x1) - math.log2(x0))
        tflops = y0 + t * (y1 - y0)
    return plateau * tflops / points[-1][1]


def efficiency(spec_name: str, op_class: str) -> Efficiency:
    """The factors of ``op_class`` (one of ``OP_CLASSES``) on the spec named ``spec_name``."""
    if op_class not in OP_CLASSES:
        raise ValueError(f"op_class={op_class!r} is not one of {OP_CLASSES}")
    table = CALIBRATION.get(spec_name) or _borrowed(spec_name)
    return table[op_class]
