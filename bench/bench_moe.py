"""Mixture-of-experts models on the simulated NPUs: the capacity planner, side by side in one run.

For Mixtral-8x7B and Qwen3-30B-A3B (built-in shapes from their public config.json, bf16, no weights)
on the ATOM, REBEL-Quad, RNGD and H100-SXM presets, devices 1/2/4/8 with the experts replicated (TP
only: attention, shared and dense MLPs split) and spread (EP = TP): memory per device, whether it fits,
TTFT of a 1024-token prompt, decode ms/token at batch 1 and 16, and the smallest fitting layout.

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


if __name__ == "__main__":
    main()
