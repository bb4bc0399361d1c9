"""Mixture of experts with expert parallelism on the simulated NPU: compile, check against eager, plan.

    python examples/moe_expert_parallel.py                              # tiny Mixtral, experts over 2 devices
    python examples/moe_expert_parallel.py --architecture Qwen2MoeForCausalLM --devices 4
    python examples/moe_expert_parallel.py --plan mixtral-8x7b --npu rngd    # also size the real model

A random-weight MoE model and a byte-level tokenizer are built in code. It is compiled with its experts
spread over ``--devices`` simulated devices (``expert_parallel_size`` = ``tensor_parallel_size``: attention
split by heads, each device holding 1/n of the experts, dispatch and combine as all-to-all collectives),
saved, reloaded and run; the greedy tokens are compared with eager Transformers and the NPU figures
(experts activated per step, load imbalance across devices) printed. ``--plan`` sizes a built-in shape
(``mixtral-8x7b``, ``qwen3-30b-a3b``) with and without expert parallelism (no weights needed).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from optimum_npu import NPUModelForCausalLM
from optimum_npu.models.tiny import build_causal_lm, build_tokenizer
from optimum_npu.planner import plan


def print_plan(model: str, npu: str, devices: list[int]) -> None:
    knobs = {"max_seq_len": 4096, "batch_size": 16, "decoder_batch_sizes": [1, 16], "prefill_chunk_size": 1024,
             "dtype": "bfloat16", "npu": npu}
    print(f"\nplan for {model} on {npu} (bf16, 16 sequences of 4096 tokens):")
    for expert_parallel in (False, True):
        for r in plan(model, knobs, tensor_parallel_sizes=devices, prompt_lengths=[1024],
                      expert_parallel=expert_parallel):
            if r.valid:
                print(f"  TP{r.tensor_parallel_size} EP{r.expert_parallel_size}: "
                      f"{r.memory_per_device_bytes['total'] / 1e9:6.1f} GB/device {'fits' if r.fits else 'does not fit'}"
                      f", TTFT(1024) {r.ttft_ms[1024]:.0f} ms, {r.decode_ms_per_token[1]:.1f} ms/token at batch 1, "
                      f"{r.decode_ms_per_token[16]:.1f} ms/step at batch 16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--architecture", default="MixtralForCausalLM",
                        choices=["MixtralForCausalLM", "Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM"])
    parser.add_argument("--devices", type=int, default=2, help="tensor_parallel_size = expert_parallel_size")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--plan", help="also plan a built-in shape (mixtral-8x7b, qwen3-30b-a3b)")
    parser.add_argument("--npu", default="rngd", help="NPU preset for --plan")
    args = parser.parse_args()

    reference = build_causal_lm(args.architecture, num_key_value_heads=4)
    tokenizer = build_tokenizer()
    model = NPUModelForCausalLM.from_model(reference, npu_config={
        "max_seq_len": 128, "batch_size": 4, "decoder_batch_sizes": [1, 4], "prefill_chunk_size": 16,
        "tensor_parallel_size": args.devices, "expert_parallel_size": args.devices})
    output = Path(tempfile.mkdtemp(prefix="optimum-npu-moe-")) / "artifact"
    model.save_pretrained(output)
    model.release()
    model = NPUModelForCausalLM.from_pretrained(output)          # reload: each rank reads only its experts

    prompts = ["Experts are routed per token", "hi", "Mixture of experts"]
    inputs = tokenizer(prompts, return_tensors="pt", padding=True)
    greedy = dict(max_new_tokens=args.max_new_tokens, min_new_tokens=args.max_new_tokens, do_sample=False)
    got, want = model.generate(**inputs, **greedy), reference.generate(**inputs, **greedy)
    print(f"greedy tokens, {args.devices} devices vs eager Transformers: "
          f"{'identical' if got.tolist() == want.tolist() else 'DIFFERENT'}")
    print(model.npu_stats)
    model.release()
    if args.plan:
        print_plan(args.plan, args.npu, [1, 2, 4, 8])


if __name__ == "__main__":
    main()
