"""A real-GPU calibration point: one Llama-3-8B-shaped decoder layer timed with plain PyTorch in bf16 on
CUDA, beside the planner's estimate of the same layer on the preset of that GPU.

The layer (hidden 4096, intermediate 14336, 32 query / 8 key-value heads of 128, RMSNorm, rotary, SwiGLU,
``F.scaled_dot_product_attention``) is timed with CUDA events, median of ``--iters`` after warm-up:
prefill of 128 / 512 / 2048 tokens (batch 1, causal) and decode at batch 1 / 8 / 32 (one new token per
sequence against a KV cache of ``--context`` tokens). The planner's estimate of one layer is the simulated
time of the 2-layer model minus that of the 1-layer model (same graphs otherwise: embedding and LM head
cancel), from graphs captured on ``meta`` (no weights).

    python bench/bench_gpu_calibration.py [--preset h200-sxm] [--context 1024] [--iters 50]
    python bench/bench_gpu_calibration.py --estimates-only --preset h200-sxm   # no GPU needed

Without a CUDA device it exits with a message (unless ``--estimates-only``). About a minute on an H100/H200.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

os.environ.setdefault("TQDM_DISABLE", "1")

import torch
import torch.nn.functional as F

from optimum_npu.models.decoder.estimate import decode_step_seconds, meta_cost_models, prefill_seconds
from optimum_npu.planner.models import builtin_config

PREFILL_TOKENS = (128, 512, 2048)
DECODE_BATCHES = (1, 8, 32)
HIDDEN, INTERMEDIATE, HEADS, KV_HEADS, HEAD_DIM = 4096, 14336, 32, 8, 128
#: GPU name fragment -> preset (the first that matches).
PRESET_OF_GPU = (("H200", "h200-sxm"), ("H100", "h100-sxm"), ("A100-SXM4-80GB", "a100-80gb"),
                 ("A100 80GB", "a100-80gb"), ("A100", "a100-40gb"))


class DecoderLayer(torch.nn.Module):
    """A Llama-3-8B decoder layer in plain PyTorch (random weights)."""

    def __init__(self):
        super().__init__()
        linear = lambda i, o: torch.nn.Linear(i, o, bias=False)  # noqa: E731
        self.q, self.k, self.v = linear(HIDDEN, HEADS * HEAD_DIM), linear(HIDDEN, KV_HEADS * HEAD_DIM), \
            linear(HIDDEN, KV_HEADS * HEAD_DIM)
        self.o = linear(HEADS * HEAD_DIM, HIDDEN)
        self.gate, self.up, self.down = linear(HIDDEN, INTERMEDIATE), linear(HIDDEN, INTERMEDIATE), \
            linear(INTERMEDIATE, HIDDEN)
        self.norm1, self.norm2 = torch.nn.RMSNorm(HIDDEN, eps=1e-5), torch.nn.RMSNorm(HIDDEN, eps=1e-5)

    def forward(self, x, positions, k_cache=None, v_cache=None):
        """x [B, S, hidden], positions [S]; decode (S = 1) writes into and attends over the caches
        [B, KVH, T, D] at ``positions``."""
        batch, seq, _ = x.shape
        h = self.norm1(x)
        q = self.q(h).view(batch, seq, HEADS, HEAD_DIM).transpose(1, 2)               # [B, H, S, D]
        k = self.k(h).view(batch, seq, KV_HEADS, HEAD_DIM).transpose(1, 2)            # [B, KVH, S, D]
        v = self.v(h).view(batch, seq, KV_HEADS, HEAD_DIM).transpose(1, 2)
        q, k = rotary(q, positions), rotary(k, positions)
        if k_cache is None:
            attn = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:
            k_cache[:, :, positions] = k
            v_cache[:, :, positions] = v
            attn = F.scaled_dot_product_attention(q, k_cache, v_cache, enable_gqa=True)
        x = x + self.o(attn.transpose(1, 2).reshape(batch, seq, HEADS * HEAD_DIM))
        h = self.norm2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


def rotary(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rotary embedding (theta 500000) of x [B, H, S, D] at positions [S]."""
    inv_freq = 1.0 / (500000.0 ** (torch.arange(0, HEAD_DIM, 2, device=x.device, dtype=torch.float32) / HEAD_DIM))
    angles = positions.float()[:, None] * inv_freq[None]                                # [S, D/2]
    cos, sin = torch.cat([angles.cos()] * 2, -1).to(x.dtype), torch.cat([angles.sin()] * 2, -1).to(x.dtype)
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], -1) * sin


def cuda_ms(fn, iters: int) -> float:
    """Median milliseconds of ``fn()`` over ``iters`` CUDA-event-timed runs, after 5 warm-up runs."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def measure(context: int, iters: int) -> dict[tuple[str, int], float]:
    """Measured ms per layer call: ("prefill", tokens) and ("decode", batch)."""
    torch.manual_seed(0)
    layer = DecoderLayer().to("cuda", torch.bfloat16).eval()
    results = {}
    with torch.inference_mode():
        for tokens in PREFILL_TOKENS:
            x = torch.randn(1, tokens, HIDDEN, device="cuda", dtype=torch.bfloat16)
            positions = torch.arange(tokens, device="cuda")
            results["prefill", tokens] = cuda_ms(lambda: layer(x, positions), iters)
        for batch in DECODE_BATCHES:
            x = torch.randn(batch, 1, HIDDEN, device="cuda", dtype=torch.bfloat16)
            caches = [torch.randn(batch, KV_HEADS, context, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
                      for _ in range(2)]
            position = torch.tensor([context - 1], device="cuda")
            results["decode", batch] = cuda_ms(lambda: layer(x, position, *caches), iters)
    return results


def estimate(preset: str, context: int) -> dict[tuple[str, int], float]:
    """The planner's ms for one layer: the 2-layer model's simulated time minus the 1-layer model's."""
    per_layers = {}
    for layers in (1, 2):
        config = builtin_config("llama-3-8b")
        config.num_hidden_layers = layers
        times = {}
        knobs = {"max_seq_len": max(context, max(PREFILL_TOKENS)), "batch_size": max(DECODE_BATCHES),
                 "decoder_batch_sizes": list(DECODE_BATCHES), "dtype": "bfloat16", "npu": preset}
        decode_graphs = [f"decoder_batch_{b}" for b in DECODE_BATCHES]
        for index, tokens in enumerate(PREFILL_TOKENS):   # one prefill graph per chunk: no padded rows
            graphs = ["prefill"] + (decode_graphs if index == 0 else [])
            _, costs = meta_cost_models(config, knobs | {"prefill_chunk_size": tokens}, graphs)
            times["prefill", tokens] = prefill_seconds(costs["prefill"], tokens, tokens)
            for batch in DECODE_BATCHES if index == 0 else ():
                times["decode", batch] = decode_step_seconds(costs[f"decoder_batch_{batch}"], batch, context)
        per_layers[layers] = times
    return {key: (per_layers[2][key] - per_layers[1][key]) * 1e3 for key in per_layers[1]}


def preset_of_this_gpu() -> str | None:
    name = torch.cuda.get_device_name()
    return next((preset for fragment, preset in PRESET_OF_GPU if fragment in name), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", help="planner preset (default: the one matching this GPU's name)")
    parser.add_argument("--context", type=int, default=1024, help="KV-cache length of the decode steps")
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--estimates-only", action="store_true", help="print the planner's estimates, time nothing")
    args = parser.parse_args()
    gpu = None
    if not args.estimates_only:
        if not torch.cuda.is_available():
            sys.exit("bench_gpu_calibration.py: no CUDA device is visible (torch.cuda.is_available() is False), so "
                     "there is nothing to time; run it on a machine with an NVIDIA GPU, or pass --estimates-only "
                     "--preset NAME to print the planner's side only")
        gpu = torch.cuda.get_device_name()
    preset = args.preset or (preset_of_this_gpu() if gpu else None)
    if preset is None:
        sys.exit(f"no planner preset matches GPU {gpu!r}; pass --preset (e.g. h200-sxm, h100-sxm, a100-80gb)")
    estimates = estimate(preset, args.context)
    measured = measure(args.context, args.iters) if gpu else {}
    print(f"Llama-3-8B decoder layer, bf16; GPU: {gpu or 'none (estimates only)'}; preset {preset}; torch "
          f"{torch.__version__}; decode context {args.context}")
    print(f"{'phase':>8} {'size':>6} {'measured ms':>12} {'planner ms':>11} {'planner/measured':>17}")
    for phase, size in [("prefill", n) for n in PREFILL_TOKENS] + [("decode", b) for b in DECODE_BATCHES]:
        planned = estimates[phase, size]
        real = measured.get((phase, size))
        shown = f"{real:12.4f}" if real is not None else f"{'-':>12}"
        ratio = f"{planned / real:17.2f}" if real else f"{'-':>17}"
        print(f"{phase:>8} {size:>6} {shown} {planned:11.4f} {ratio}")


if __name__ == "__main__":
    main()
