"""Mixture-of-experts models on the simulated NPUs: the capacity planner, side by side in one run.

For Mixtral-8x7B and Qwen3-30B-A3B (built-in shapes from their public config.json, bf16, no weights)
on the ATOM, REBEL-Quad, RNGD and H100-SXM presets, devices 1/2/4/8 with the experts replicated (TP
only: attention, shared and dense MLPs split) and spread (EP = TP): memory per device, whether it fits,
TTFT of a 1024-token prompt, decode ms/token at batch 1 and 16, and the smallest fitting layout.

A last line plans the setting of a public measurement for comparison: Mixtral-8x7B with int8 weights on
one A100 80GB, a 512-token prompt, batch 1 (Baseten, TensorRT-LLM: 127 ms TTFT, 81 tokens/s).

    python bench/bench_moe.py [--models mixtral-8x7b qwen3-30b-a3b] [--npus atom rebel-quad rngd h100-sxm]
"""

from __future__ import annotations

import argparse
import os

from optimum_npu.planner import plan

os.environ.setdefault("TQDM_DISABLE", "1")
KNOBS = {"max_seq_len": 4096, "batch_size": 16, "decoder_batch_sizes": [1, 16], "prefill_chunk_size": 1024,
         "dtype": "bfloat16"}
SIZES = [1, 2, 4, 8]


def rows(model: str, npu: str):
    for expert_parallel in (False, True):
        for result in plan(model, KNOBS | {"npu": npu}, tensor_parallel_sizes=SIZES, prompt_lengths=[1024],
                           expert_parallel=expert_parallel):
            if not result.valid or (expert_parallel and result.tensor_parallel_size == 1):
                continue
            memory = result.memory_per_device_bytes["total"] / 1e9
            yield (f"{model:14} {npu:10} TP{result.tensor_parallel_size} EP{result.expert_parallel_size}"
                   f" {memory:7.1f} GB {'fits' if result.fits else 'no  '}"
                   f" {result.ttft_ms[1024]:9.1f} {result.decode_ms_per_token[1]:9.2f}"
                   f" {result.decode_ms_per_token[16]:9.2f}"), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mixtral-8x7b", "qwen3-30b-a3b"])
    parser.add_argument("--npus", nargs="+", default=["atom", "rebel-quad", "rngd", "h100-sxm"])
    args = parser.parse_args()
    print(f"{'model':14} {'npu':10} layout  memory/dev  fit  TTFT(1024) ms  ms/tok b1  ms/tok b16")
    for model in args.models:
        for npu in args.npus:
            fitting = []
            for line, result in rows(model, npu):
                print(line, flush=True)
                if result.fits:
                    fitting.append(result)
            best = min(fitting, key=lambda r: (r.tensor_parallel_size, -r.expert_parallel_size), default=None)
            print(f"  smallest fitting on {npu}: " + (f"TP{best.tensor_parallel_size} EP{best.expert_parallel_size}"
                                                     if best else "none up to 8 devices"), flush=True)
    public_comparison()


def public_comparison() -> None:
    """Baseten, "Faster Mixtral inference with TensorRT-LLM and quantization" (2023): int8 Mixtral-8x7B on one
    A100 80GB, 512-token input, 128-token output, one request: 127 ms TTFT and 81 perceived tokens/s."""
    knobs = {"max_seq_len": 1024, "batch_size": 1, "decoder_batch_sizes": [1], "prefill_chunk_size": 512,
             "dtype": "bfloat16", "npu": "a100-80gb", "quantization": {"weights": "int8"}}
    result = plan("mixtral-8x7b", knobs, tensor_parallel_sizes=[1], prompt_lengths=[512], decode_context_len=640)[0]
    print(f"mixtral-8x7b int8 on a100-80gb TP1: TTFT(512) {result.ttft_ms[512]:.1f} ms, "
          f"{1e3 / result.decode_ms_per_token[1]:.1f} tokens/s at batch 1 (Baseten, TensorRT-LLM: 127 ms, 81 tokens/s)")


if __name__ == "__main__":
    main()
