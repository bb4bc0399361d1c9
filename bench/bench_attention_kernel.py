"""Host time of one ``npu.paged_attention`` call at the 76M bench model's shapes, fused path on and off.

Times the device's paged attention kernel alone, as a decode step and a prefill chunk of the
``bench`` Llama (``bench/bench_generate.py``) call it: 12 query heads over 4 KV heads of 64 dims,
fp32, a pool of 4 blocks of 256 tokens, one kernel call per layer for 12 layers on the same
positions and block table (so the per-call index work is shared, as in a graph call). Between two
calls the layer's linears run untimed at the same rows, so the KV cache and the host's code are as
cold as in a real step. Scenarios: decode at batch 1, at batch 4 with equal contexts on blocks held in
reverse order (what ``generate()`` gives), at batch 4 with unequal contexts and one padding row,
and a 128-token prefill chunk holding 86 tokens. ``fused`` is the path of plain attention through
one ``scaled_dot_product_attention`` call (``attention_math.FUSED``), ``masked`` the masked-softmax
math; the two alternate within each repeat. On a tree without the switch only the kernel as
imported is timed (run it with ``PYTHONPATH`` on an older checkout to compare trees).

    python bench/bench_attention_kernel.py [--repeats 7] [--steps 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from optimum_npu.device.kernels import attention_math
from optimum_npu.device.kernels.paged_attention import paged_attention_kernel

LAYERS, HEADS, KV_HEADS, HEAD_DIM, HIDDEN, FFN = 12, 12, 4, 64, 768, 2048
POOL_BLOCKS, BLOCK = 4, 256
#: name -> (positions [B, S], block table [B, 1])
SCENARIOS = {
    "decode b1 ctx 120": ([[119]], [[3]]),
    "decode b4 ctx 116, blocks 3-0": ([[115]] * 4, [[3], [2], [1], [0]]),
    "decode b4 ctx 150/120/86, 1 pad": ([[149], [119], [85], [-1]], [[0], [1], [2], [3]]),
    "prefill 128-token chunk, 86 real": ([list(range(86)) + [-1] * 42], [[0]]),
}


class Layers:
    """Per-layer caches, new q/k/v and linear weights for one scenario's grid."""

    def __init__(self, batch: int, seq: int, gen: torch.Generator):
        def rand(*shape):
            return torch.randn(*shape, generator=gen)

        self.caches = [(rand(POOL_BLOCKS, KV_HEADS, BLOCK, HEAD_DIM), rand(POOL_BLOCKS, KV_HEADS, BLOCK, HEAD_DIM))
                       for _ in range(LAYERS)]
        self.qkv = [(rand(batch, seq, HEADS, HEAD_DIM), rand(batch, seq, KV_HEADS, HEAD_DIM),
                     rand(batch, seq, KV_HEADS, HEAD_DIM)) for _ in range(LAYERS)]
        self.weights = [[rand(out, inner) * 0.02 for out, inner in
                         ((HIDDEN * 5 // 3, HIDDEN), (HIDDEN, HIDDEN), (FFN, HIDDEN), (FFN, HIDDEN), (HIDDEN, FFN))]
                        for _ in range(LAYERS)]
        self.hidden = {inner: rand(batch * seq, inner) for inner in (HIDDEN, FFN)}

    def other_work(self, layer: int) -> None:
        """The layer's linears at the grid's rows (untimed: they evict the cache as a real step does)."""
        for weight in self.weights[layer]:
            F.linear(self.hidden[weight.shape[1]], weight)


def time_step(layers: Layers, positions: torch.Tensor, table: torch.Tensor) -> float:
    """Seconds spent in the kernel over one step's 12 layers."""
    total = 0.0
    for layer in range(LAYERS):
        layers.other_work(layer)
        query, key, value = layers.qkv[layer]
        k_cache, v_cache = layers.caches[layer]
        start = time.perf_counter()
        paged_attention_kernel(query, key, value, k_cache, v_cache, table, positions, HEAD_DIM ** -0.5)
        total += time.perf_counter() - start
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20, help="steps (12 calls each) per timed repeat")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    switchable = hasattr(attention_math, "FUSED")
    paths = (True, False) if switchable else (None,)
    print(f"paged_attention host time per call (us), median of {args.repeats} alternating repeats of {args.steps} "
          f"steps x {LAYERS} layers, torch threads {torch.get_num_threads()}")
    print(f"{'scenario':<34} " + ("  fused masked  masked/fused" if switchable else "  as imported"))
    for name, (grid, blocks) in SCENARIOS.items():
        positions, table = torch.tensor(grid), torch.tensor(blocks, dtype=torch.int32)
        layers = Layers(*positions.shape, torch.Generator().manual_seed(0))
        seconds: dict = {path: [] for path in paths}
        for repeat in range(args.repeats + 1):                      # the first repeat warms up
            for path in (paths if repeat % 2 == 0 else paths[::-1]):
                if switchable:
                    attention_math.FUSED = path
                elapsed = sum(time_step(layers, positions, table) for _ in range(args.steps))
                if repeat:
                    seconds[path].append(elapsed / (args.steps * LAYERS) * 1e6)
        medians = {path: statistics.median(values) for path, values in seconds.items()}
        if switchable:
            attention_math.FUSED = True
            print(f"{name:<34} {medians[True]:7.1f} {medians[False]:6.1f} {medians[False] / medians[True]:12.2f}")
        else:
            print(f"{name:<34} {medians[None]:13.1f}")


if __name__ == "__main__":
    main()
