"""Mixture-of-experts models on the simulated NPUs: the capacity planner, side by side in one run.

For Mixtral-8x7B, Qwen3-30B-A3B and gpt-oss-120b (built-in shapes from their public config.json, bf16, no
weights) on the ATOM, REBEL-Quad, RNGD and H100-SXM presets, devices 1/2/4/8 with the experts replicated (TP
only: attention, shared and dense MLPs split), spread (EP = TP) or split by intermediate size (ETP:
``expert_tensor_parallel``): memory per device, whether it fits, TTFT of a 1024-token prompt, decode ms/token
at batch 1 and 16, and the smallest fitting layout.

Last lines plan the settings of public figures for comparison: Mixtral-8x7B with int8 weights on one A100
80GB, a 512-token prompt, batch 1 (Baseten, TensorRT-LLM: 127 ms TTFT, 81 tokens/s); gpt-oss-120b on one
H100 80GB with 4-bit experts (Hugging Face's release post: fits on a single H100 with its MXFP4 experts).

    python bench/bench_moe.py [--models mixtral-8x7b qwen3-30b-a3b gpt-oss-120b] [--npus atom rebel-quad rngd h100-sxm]
                              [--layouts replicated ep etp]
"""

from __future__ import annotations

import argparse
import os

from optimum_npu.planner import plan

os.environ.setdefault("TQDM_DISABLE", "1")
KNOBS = {"max_seq_len": 4096, "batch_size": 16, "decoder_batch_sizes": [1, 16], "prefill_chunk_size": 1024,
         "dtype": "bfloat16"}
SIZES = [1, 2, 4, 8]


#: layout label -> (plan() arguments, extra knobs); TP 1 is planned once, with the replicated layout.
LAYOUTS = {"replicated": ({}, {}), "ep": ({"expert_parallel": True}, {}),
           "etp": ({}, {"expert_tensor_parallel": True})}


def rows(model: str, npu: str, layouts: list[str]):
    for layout in layouts:
        arguments, knobs = LAYOUTS[layout]
        for result in plan(model, KNOBS | knobs | {"npu": npu}, tensor_parallel_sizes=SIZES, prompt_lengths=[1024],
                           **arguments):
            if not result.valid or (layout != "replicated" and result.tensor_parallel_size == 1):
                continue
            split = {"ep": f"EP{result.expert_parallel_size}", "etp": "ETP"}.get(layout, "EP1")
            memory = result.memory_per_device_bytes["total"] / 1e9
            yield (f"{model:14} {npu:10} TP{result.tensor_parallel_size} {split:4}"
                   f" {memory:7.1f} GB {'fits' if result.fits else 'no  '}"
                   f" {result.ttft_ms[1024]:9.1f} {result.decode_ms_per_token[1]:9.2f}"
                   f" {result.decode_ms_per_token[16]:9.2f}"), result, split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mixtral-8x7b", "qwen3-30b-a3b", "gpt-oss-120b"])
    parser.add_argument("--npus", nargs="+", default=["atom", "rebel-quad", "rngd", "h100-sxm"])
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    parser.add_argument("--no-public", action="store_true", help="skip the comparison with public figures")
    args = parser.parse_args()
    print(f"{'model':14} {'npu':10} layout    memory/dev  fit  TTFT(1024) ms  ms/tok b1  ms/tok b16")
    for model in args.models:
        for npu in args.npus:
            fitting = []
            for line, result, split in rows(model, npu, args.layouts):
                print(line, flush=True)
                if result.fits:
                    fitting.append((result.tensor_parallel_size, split != "EP1", split, result))
            best = min(fitting, key=lambda item: (item[0], not item[1]), default=None)
            print(f"  smallest fitting on {npu}: " + (f"TP{best[0]} {best[2]}" if best else "none up to 8 devices"),
                  flush=True)
    if not args.no_public:
        public_comparison()


def public_comparison() -> None:
    """Baseten, "Faster Mixtral inference with TensorRT-LLM and quantization" (2023): int8 Mixtral-8x7B on one
    A100 80GB, 512-token input, 128-token output, one request: 127 ms TTFT and 81 perceived tokens/s."""
    knobs = {"max_seq_len": 1024, "batch_size": 1, "decoder_batch_sizes": [1], "prefill_chunk_size": 512,
             "dtype": "bfloat16", "npu": "a100-80gb", "quantization": {"weights": "int8"}}
    result = plan("mixtral-8x7b", knobs, tensor_parallel_sizes=[1], prompt_lengths=[512], decode_context_len=640)[0]
    print(f"mixtral-8x7b int8 on a100-80gb TP1: TTFT(512) {result.ttft_ms[512]:.1f} ms, "
          f"{1e3 / result.decode_ms_per_token[1]:.1f} tokens/s at batch 1 (Baseten, TensorRT-LLM: 127 ms, 81 tokens/s)")
    gpt_oss_on_one_h100()



def gpt_oss_on_one_h100() -> None:
    """Hugging Face, "Welcome GPT OSS, the new open-source model family from OpenAI" (huggingface.co/blog, 2025-08-05):
    with its MoE weights in MXFP4 (4 bits + a shared 8-bit exponent per 32 values), "the large model fits on a single
    H100 GPU". Planned here with int4 weights and a bfloat16 scale per 32 values (4.5 bits), experts included (the
    checkpoint keeps attention in bf16: this is slightly smaller), one 4096-token sequence."""
    knobs = {"max_seq_len": 4096, "batch_size": 1, "decoder_batch_sizes": [1], "prefill_chunk_size": 1024,
             "dtype": "bfloat16", "npu": "h100-sxm", "quantization": {"weights": "int4", "group_size": 32}}
    result = plan("gpt-oss-120b", knobs, tensor_parallel_sizes=[1], prompt_lengths=[1024])[0]
    memory = result.memory_per_device_bytes
    print(f"gpt-oss-120b int4 (g32) on h100-sxm TP1: weights {memory['weights'] / 2 ** 30:.1f} GiB, total "
          f"{memory['total'] / 1e9:.1f} GB, {'fits' if result.fits else 'does not fit'} in 80 GB; TTFT(1024) "
          f"{result.ttft_ms[1024]:.1f} ms, {1e3 / result.decode_ms_per_token[1]:.1f} tokens/s at batch 1 "
          "(Hugging Face / OpenAI: fits on a single H100 80 GB with MXFP4 experts)")


if __name__ == "__main__":
    main()
