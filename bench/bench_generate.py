"""Simulated-NPU generate() versus eager Transformers generate() on the same CPU, side by side.

Builds a ~76M-parameter Llama-shaped model in code (random weights, nothing downloaded),
compiles it, and for batch 1 and 4 times the same greedy generation through both paths,
alternating runs so that machine noise hits both alike. Prints host tokens/s for both,
their ratio, the simulated NPU figures, the compile time and the artifact size.

    python bench/bench_generate.py [--new-tokens 64] [--repeats 3] [--npu atom]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from optimum_npu import NPUModelForCausalLM
from optimum_npu.models.tiny import build_causal_lm, build_tokenizer

PROMPT = "The simulated NPU runs the compiled graphs with real arithmetic and accounts for time."


def timed_generate(model, inputs, new_tokens: int) -> float:
    start = time.perf_counter()
    output = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    elapsed = time.perf_counter() - start
    assert output.shape[1] == inputs["input_ids"].shape[1] + new_tokens
    return elapsed


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--npu", default="atom")
    args = parser.parse_args()
    torch.manual_seed(0)
    hf_model = build_causal_lm("LlamaForCausalLM", size="bench")
    params = sum(p.numel() for p in hf_model.parameters())
    tokenizer = build_tokenizer()

    start = time.perf_counter()
    npu_model = NPUModelForCausalLM.from_model(hf_model, npu_config={
        "max_seq_len": 256, "batch_size": 4, "decoder_batch_sizes": [1, 2, 4], "prefill_chunk_size": 128,
        "npu": args.npu}, compile_cache=False)  # time a real compile, not a cache hit
    compile_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        npu_model.save_pretrained(Path(tmp) / "artifact")
        artifact_bytes = directory_bytes(Path(tmp) / "artifact")
        weights_bytes = (Path(tmp) / "artifact" / "model.safetensors").stat().st_size

    print(f"model: Llama-shaped, {params / 1e6:.1f}M parameters, fp32, {args.new_tokens} new tokens, "
          f"median of {args.repeats} runs")
    print(f"compile: {compile_s:.2f} s for {len(npu_model.npu_graphs)} graphs; artifact {artifact_bytes / 2**20:.1f} "
          f"MiB (weights {weights_bytes / 2**20:.1f} MiB, graphs+configs "
          f"{(artifact_bytes - weights_bytes) / 2**20:.2f} MiB)")
    print(f"{'batch':>5} {'eager tok/s':>12} {'npu-sim tok/s':>14} {'ratio':>7} {'sim TTFT ms':>12} "
          f"{'sim ms/step':>12} {'sim tok/s':>10}")
    for batch in (1, 4):
        inputs = tokenizer([PROMPT] * batch, return_tensors="pt", padding=True)
        for model in (hf_model, npu_model):
            timed_generate(model, inputs, 4)  # warm-up
        eager, npu = [], []
        for _ in range(args.repeats):
            eager.append(timed_generate(hf_model, inputs, args.new_tokens))
            npu.append(timed_generate(npu_model, inputs, args.new_tokens))
        eager_tps = batch * args.new_tokens / statistics.median(eager)
        npu_tps = batch * args.new_tokens / statistics.median(npu)
        stats = npu_model.npu_stats
        print(f"{batch:>5} {eager_tps:>12.1f} {npu_tps:>14.1f} {npu_tps / eager_tps:>7.2f} "
              f"{stats.ttft_s * 1e3:>12.3f} {stats.decode_s_per_token * 1e3:>12.3f} {stats.tokens_per_s:>10.0f}")


if __name__ == "__main__":
    main()
