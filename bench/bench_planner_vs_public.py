"""The planner's estimates beside public end-to-end measurements, and its prefill (TTFT) estimates.

Decode: gpt-fast's README (pytorch-labs/gpt-fast): Llama-2-7B and Llama-2-70B "Base" (bf16), batch 1,
5-token prompt, on A100-80GB SXM (power-limited to 330 W), 1 to 8 GPUs tensor parallel. The planner
uses the a100-80gb preset, a 256-token static cache (gpt-fast sizes its cache to prompt + new tokens)
and a context of 100 tokens. TTFT: Llama-3-8B, one prefill chunk of the whole prompt, batch 1.

Each figure is one layer's simulated time (the 2-layer model minus the 1-layer model, graphs captured
on ``meta``) times the layer count plus the rest of the model, so 70B shapes cost seconds to plan.

    python bench/bench_planner_vs_public.py
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")

from transformers import AutoConfig  # noqa: E402

from optimum_npu.models.decoder.estimate import decode_step_seconds, meta_cost_models, prefill_seconds  # noqa: E402

SHAPES = {  # public config.json fields that set the cost; layers separately
    "Llama-2-7B": (32, dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_attention_heads=32,
                            num_key_value_heads=32, max_position_embeddings=4096)),
    "Llama-2-70B": (80, dict(vocab_size=32000, hidden_size=8192, intermediate_size=28672, num_attention_heads=64,
                             num_key_value_heads=8, max_position_embeddings=4096)),
    "Llama-3-8B": (32, dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_attention_heads=32,
                            num_key_value_heads=8, max_position_embeddings=8192, rope_theta=500000.0)),
}
#: (model, tensor parallel size) -> gpt-fast README tokens/s on A100-80GB, bf16, batch 1.
GPT_FAST = {("Llama-2-7B", 1): 104.9, ("Llama-2-7B", 2): 168.84, ("Llama-2-7B", 4): 254.02,
            ("Llama-2-7B", 8): 328.43, ("Llama-2-70B", 2): 21.32, ("Llama-2-70B", 4): 38.01,
            ("Llama-2-70B", 8): 62.50}


def estimate_ms(model: str, preset: str, tp: int, prompt: int | None = None, context: int = 100) -> float:
    """Simulated ms of a ``prompt``-token prefill, or of one decode step at ``context`` when prompt is None."""
    layers, fields = SHAPES[model]
    seconds = {}
    for count in (1, 2):
        config = AutoConfig.for_model("llama", architectures=["LlamaForCausalLM"], num_hidden_layers=count,
                                      tie_word_embeddings=False, **fields)
        knobs = {"max_seq_len": prompt or 256, "batch_size": 1, "decoder_batch_sizes": [1],
                 "prefill_chunk_size": prompt or 128, "dtype": "bfloat16", "npu": preset, "tensor_parallel_size": tp}
        _, costs = meta_cost_models(config, knobs, ["prefill", "decoder_batch_1"])
        seconds[count] = (prefill_seconds(costs["prefill"], prompt, prompt) if prompt
                          else decode_step_seconds(costs["decoder_batch_1"], 1, context))
    return (seconds[1] + (layers - 1) * (seconds[2] - seconds[1])) * 1e3


def main() -> None:
    print("decode, batch 1, A100-80GB bf16: gpt-fast README versus the planner (a100-80gb)")
    print(f"{'model':>12} {'TP':>3} {'measured ms':>12} {'planner ms':>11} {'error':>8}")
    for (model, tp), tokens_per_s in GPT_FAST.items():
        measured = 1e3 / tokens_per_s
        planned = estimate_ms(model, "a100-80gb", tp)
        print(f"{model:>12} {tp:>3} {measured:>12.2f} {planned:>11.2f} {100 * (planned / measured - 1):>7.1f}%")
    print("\nprefill (TTFT) estimates, Llama-3-8B, bf16, batch 1 (no public measurement to compare with)")
    print(f"{'preset':>10} {'TP':>3} " + " ".join(f"{f'{n} tok ms':>12}" for n in (128, 512, 2048)))
    for preset in ("a100-80gb", "h100-sxm", "h200-sxm"):
        for tp in (1, 8):
            values = [estimate_ms("Llama-3-8B", preset, tp, prompt=n) for n in (128, 512, 2048)]
            print(f"{preset:>10} {tp:>3} " + " ".join(f"{v:>12.2f}" for v in values))


if __name__ == "__main__":
    main()
