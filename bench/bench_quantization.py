"""What each quantization format costs in quality and gains in memory and simulated speed, side by side.

For a decoder built in code (seed 0), every format is compiled from the same checkpoint and compared
with the unquantized model in one run:

- quality: top-1 next-token agreement and mean KL(unquantized || quantized) over a fixed token stream,
  the compiled model teacher-forced step by step (``models/decoder/quality.py``), the reference being
  eager Transformers in float32;
- memory: the weight and KV-cache bytes the device reserves (the compiler's memory plan);
- speed: simulated time of a generate() of ``--new-tokens`` tokens (TTFT and ms per decode step).

Then the planner's figures for Llama-3-8B (bfloat16 vs each weight format on one ATOM, shapes only).

    python bench/bench_quantization.py [--size tiny] [--npu rngd] [--group-size 32]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

TEXT = ("The quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. "
        "How vexingly quick daft zebras jump! Sphinx of black quartz, judge my vow.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="tiny", help="model size of optimum_npu.models.tiny.SIZES")
    parser.add_argument("--npu", default="rngd", help="target preset (rngd has int8 and fp8 engines, no int4)")
    parser.add_argument("--group-size", type=int, default=32, help="input features per int8/int4 scale")
    parser.add_argument("--tokens", type=int, default=128, help="length of the fixed token stream")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens generated for the speed figures")
    parser.add_argument("--skip-plan", action="store_true", help="leave out the Llama-3-8B planner figures")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="optimum-npu-bench-quant-") as work:
        quality_and_speed(args, Path(work))
    if not args.skip_plan:
        planner_figures()


def formats(group_size: int) -> dict[str, dict | None]:
    return {"none": None, "int8": {"weights": "int8", "group_size": group_size},
            "int4": {"weights": "int4", "group_size": group_size}, "fp8": {"weights": "fp8"},
            "fp8 KV": {"kv_cache": "fp8"}, "int8 + fp8 KV": {"weights": "int8", "kv_cache": "fp8",
                                                             "group_size": group_size}}


def quality_and_speed(args: argparse.Namespace, work: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from optimum_npu import NPUModelForCausalLM
    from optimum_npu.models.decoder.quality import agreement, reference_logits, stream_logits
    from optimum_npu.models.tiny import build_tokenizer, save_causal_lm

    checkpoint = save_causal_lm(work / "checkpoint", "LlamaForCausalLM", size=args.size)
    stream = (build_tokenizer()(TEXT * 4)["input_ids"])[:args.tokens]
    reference = reference_logits(AutoModelForCausalLM.from_pretrained(checkpoint).eval(), stream)
    knobs = {"max_seq_len": 256, "batch_size": 1, "prefill_chunk_size": 32, "npu": args.npu}
    prompt = torch.tensor([stream[:32]])
    print(f"{args.size} Llama (seed 0, float32) on {args.npu}, {len(stream)}-token stream, knobs {knobs}\n"
          "| format | top-1 agreement | mean KL (nats) | weights (KiB) | KV cache (KiB) | TTFT (us) | "
          "decode (us/token) | decode speedup |\n|---|---|---|---|---|---|---|---|")
    base_decode = None
    for name, quantization in formats(args.group_size).items():
        config = {**knobs, **({"quantization": quantization} if quantization else {})}
        model = NPUModelForCausalLM.from_pretrained(checkpoint, export=True, npu_config=config)
        try:
            measured = agreement(reference, stream_logits(model, stream))
            model.generate(prompt, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)
            stats = model.npu_stats
        finally:
            model.release()
        decode = stats.decode_s_per_token
        base_decode = base_decode or decode
        print(f"| {name} | {measured.top1:.3f} | {measured.kl:.2e} | {stats.memory['weights'] / 1024:.1f} | "
              f"{stats.memory['kv_cache'] / 1024:.1f} | {stats.ttft_s * 1e6:.1f} | {decode * 1e6:.2f} | "
              f"{base_decode / decode:.2f}x |")


def planner_figures() -> None:
    from optimum_npu.planner import plan

    print("\nLlama-3-8B on one ATOM (16 GB), max_seq_len 4096, batch 1 (planner: shapes only, no weights)\n"
          "| weights | weights / device (GiB) | total (GiB) | fits | decode (ms/token) | TTFT 1024 (ms) |\n"
          "|---|---|---|---|---|---|")
    for label, quantization in (("bfloat16", None), ("int8", {"weights": "int8"}), ("int4", {"weights": "int4"})):
        knobs = {"max_seq_len": 4096, "npu": "atom", **({"quantization": quantization} if quantization else {})}
        result = plan("llama-3-8b", knobs, tensor_parallel_sizes=[1], prompt_lengths=[1024])[0]
        memory = result.memory_per_device_bytes
        print(f"| {label} | {memory['weights'] / 2**30:.2f} | {memory['total'] / 2**30:.2f} | "
              f"{'yes' if result.fits else 'no'} | {result.decode_ms_per_token[1]:.2f} | {result.ttft_ms[1024]:.1f} |")


if __name__ == "__main__":
    main()
