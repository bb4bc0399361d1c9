"""Tensor parallelism on the simulated NPU, side by side in one run.

1. The capacity planner on a Llama-3-8B shape (vocab 128256, hidden 4096, intermediate 14336,
   32 layers, 32 heads, 8 KV heads, bf16) on the ATOM preset, TP 1/2/4/8: memory per device,
   fit, decode ms/token and tokens/s at batch 1 and at the largest decode bucket, and the
   speed-up per doubling of devices (simulated figures from the cost model; no weights).
2. The host wall-clock cost of simulating a TP=4 run versus TP=1: small Llamas built in code
   (6M and 76M parameters), real ``generate()`` on both, alternating runs, median: how much
   slower the simulation itself gets when every rank runs its shard of every op.

    python bench/bench_tensor_parallel.py [--max-seq-len 4096] [--batch-size 8] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from optimum_npu import NPUModelForCausalLM
from optimum_npu.device.memory import format_bytes
from optimum_npu.models.tiny import build_causal_lm
from optimum_npu.planner import plan

SIZES = [1, 2, 4, 8]
os.environ.setdefault("TQDM_DISABLE", "1")  # no compile progress bars between the figures


def planner_table(max_seq_len: int, batch_size: int) -> None:
    start = time.perf_counter()
    results = plan("llama-3-8b", {"max_seq_len": max_seq_len, "batch_size": batch_size, "npu": "atom"},
                   tensor_parallel_sizes=SIZES, prompt_lengths=[1024])
    seconds = time.perf_counter() - start
    big = batch_size
    print(f"1) Llama-3-8B shape, bf16, ATOM (16 GB per device), max_seq_len {max_seq_len}, batch_size {batch_size} "
          f"(planned in {seconds:.1f} s)")
    header = (f"   {'TP':>3} {'memory/device':>14} {'fits':>5} {'TTFT 1k ms':>11} {'ms/token b1':>12} "
              f"{'tok/s b1':>9} {f'ms/token b{big}':>12} {f'tok/s b{big}':>10} "
              f"{f'speed-up vs TP/2 (b1, b{big})':>28}")
    print(header)
    previous = None
    for result in results:
        memory = result.memory_per_device_bytes
        decode = result.decode_ms_per_token
        speedup = (f"{previous[1] / decode[1]:.2f}x, {previous[big] / decode[big]:.2f}x" if previous else "-")
        print(f"   {result.tensor_parallel_size:>3} {format_bytes(memory['total']):>14} "
              f"{'yes' if result.fits else 'NO':>5} {result.ttft_ms[1024]:>11.2f} {decode[1]:>12.2f} "
              f"{result.tokens_per_s[1]:>9.1f} {decode[big]:>12.2f} {result.tokens_per_s[big]:>10.1f} {speedup:>28}")
        previous = decode
    for result in results:
        if not result.fits:
            print(f"   TP={result.tensor_parallel_size} does not fit: {result.suggestion}")


#: size preset -> (overrides making 4 divide the heads, label)
MODELS = {"demo": (dict(num_attention_heads=8, num_key_value_heads=4), "hidden 256, 4 layers, 8/4 heads, 6M"),
          "bench": ({}, "hidden 768, 12 layers, 12/4 heads, 76M")}


def simulator_overhead(size: str, rounds: int) -> None:
    overrides, label = MODELS[size]
    hf_model = build_causal_lm("LlamaForCausalLM", size=size, **overrides)
    knobs = {"max_seq_len": 256, "batch_size": 1, "prefill_chunk_size": 32}
    models = {tp: NPUModelForCausalLM.from_model(hf_model, npu_config=knobs | {"tensor_parallel_size": tp,
                                                                               "device": 0 if tp == 1 else 4})
              for tp in (1, 4)}
    ids = torch.randint(3, 250, (1, 48), generator=torch.Generator().manual_seed(0))
    wall: dict[int, list[float]] = {1: [], 4: []}
    outputs = {}
    for _ in range(rounds):
        for tp, model in models.items():
            start = time.perf_counter()
            outputs[tp] = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=64,
                                         min_new_tokens=64, do_sample=False)
            wall[tp].append(time.perf_counter() - start)
    one, four = statistics.median(wall[1]), statistics.median(wall[4])
    same = torch.equal(outputs[1], outputs[4])
    print(f"   Llama {label}:")
    for tp, median in ((1, one), (4, four)):
        stats = models[tp].npu_stats
        print(f"     TP={tp}: host {median * 1e3:8.1f} ms per generate(); simulated ATOM TTFT "
              f"{stats.ttft_s * 1e3:.3f} ms, {stats.decode_s_per_token * 1e3:.3f} ms/token")
    print(f"     TP=4 / TP=1 host wall-clock ratio: {four / one:.2f}  (greedy tokens identical: {same})")
    for model in models.values():
        model.release()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-seq-len", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    planner_table(args.max_seq_len, args.batch_size)
    print(f"\n2) simulator host wall clock, 48-token prompt + 64 new tokens, median of {args.rounds} alternating runs")
    for size in MODELS:
        simulator_overhead(size, args.rounds)


if __name__ == "__main__":
    main()
