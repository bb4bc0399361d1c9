"""KV-cache techniques measured on the simulated NPU, side by side in one run.

1. Decode time per token at context 1k / 8k / 32k for a Llama-3-8B-shaped model
   (bf16, max_seq_len 32768, RNGD preset), eager attention versus flash partitions of 4096:
   cost-model figures from graphs captured on a weightless (meta) model.
2. KV-cache memory of Gemma-3-shaped configurations (4B and 27B shapes, 5 sliding layers
   per global one, window 1024) at max_seq_len 32768, with sliding-window rings versus
   every layer keeping the full context.
3. TTFT for a prompt that shares a 1k-token system prompt with an earlier request, with and
   without prefix caching: a real run of a 76M-parameter model built in code.

    python bench/bench_kv_cache.py
"""

from __future__ import annotations

import dataclasses

import torch
from transformers import AutoConfig

from optimum_npu import NPUModelForCausalLM
from optimum_npu.models.decoder.estimate import decode_step_seconds, meta_cost_models
from optimum_npu.models.decoder.memory_plan import kv_pool_bytes
from optimum_npu.models.decoder.npu_config import NPUDecoderConfig
from optimum_npu.models.model_config import FULL, DecoderModelConfig
from optimum_npu.models.tiny import build_causal_lm

LLAMA3_8B = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072, rope_theta=500000.0)
GEMMA3 = {"4B": dict(hidden_size=2560, intermediate_size=10240, num_hidden_layers=34, num_attention_heads=8,
                     num_key_value_heads=4, head_dim=256),
          "27B": dict(hidden_size=5376, intermediate_size=21504, num_hidden_layers=62, num_attention_heads=32,
                      num_key_value_heads=16, head_dim=128)}


def flash_versus_eager() -> None:
    hf_config = AutoConfig.for_model("llama", architectures=["LlamaForCausalLM"], **LLAMA3_8B)
    base = {"max_seq_len": 32768, "kvcache_block_size": 4096, "dtype": "bfloat16", "npu": "rngd"}
    rows = {}
    for impl, extra in (("eager", {}), ("flash_attn", {"kvcache_partition_len": 4096})):
        _, costs = meta_cost_models(hf_config, base | {"attn_impl": impl, **extra}, ["decoder_batch_1"])
        rows[impl] = [decode_step_seconds(costs["decoder_batch_1"], 1, ctx) * 1e3 for ctx in (1024, 8192, 32768)]
    print("1) Llama-3-8B shape, bf16, RNGD, max_seq_len 32768: simulated decode ms/token")
    print(f"   {'context':>8} {'eager':>9} {'flash 4096':>11} {'eager/flash':>12}")
    for index, ctx in enumerate((1024, 8192, 32768)):
        eager, flash = rows["eager"][index], rows["flash_attn"][index]
        print(f"   {ctx:>8} {eager:>9.3f} {flash:>11.3f} {eager / flash:>12.2f}")


def sliding_window_memory() -> None:
    print("2) Gemma-3 shapes, bf16, max_seq_len 32768, batch 1: KV-cache memory")
    print(f"   {'model':>6} {'all global GiB':>15} {'sliding rings GiB':>18} {'saving':>7}")
    for name, shape in GEMMA3.items():
        hf_config = AutoConfig.for_model("gemma3_text", architectures=["Gemma3ForCausalLM"], vocab_size=262144,
                                         sliding_window=1024, max_position_embeddings=131072, **shape)
        model = DecoderModelConfig.from_hf(hf_config)
        config = NPUDecoderConfig(max_seq_len=32768, dtype="bfloat16", npu="rebel-quad").resolve(model)
        sliding = sum(kv_pool_bytes(model, config).values())
        global_only = dataclasses.replace(model, layer_types=(FULL,) * model.num_layers)
        full = sum(kv_pool_bytes(global_only, config).values())
        print(f"   {name:>6} {full / 2**30:>15.2f} {sliding / 2**30:>18.2f} {full / sliding:>6.1f}x")


def prefix_caching_ttft() -> None:
    torch.manual_seed(0)
    hf_model = build_causal_lm("LlamaForCausalLM", size="bench", max_position_embeddings=2048)
    system = torch.randint(3, 250, (1, 1024))
    questions = [torch.randint(3, 250, (1, 40)) for _ in range(2)]
    knobs = {"max_seq_len": 2048, "prefill_chunk_size": 128, "kvcache_block_size": 128}
    print("3) 1k-token shared system prompt + 40-token question, 76M model, ATOM: simulated TTFT")
    for caching in (False, True):
        model = NPUModelForCausalLM.from_model(hf_model, npu_config=knobs | {"enable_prefix_caching": caching})
        ttfts = []
        for question in questions:
            ids = torch.cat([system, question], dim=1)
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=1)
            ttfts.append((model.npu_stats.ttft_s * 1e3, model.npu_stats.prefix_hit_tokens))
        label = "with prefix caching" if caching else "without"
        print(f"   {label:<20} first request {ttfts[0][0]:7.3f} ms, second request {ttfts[1][0]:7.3f} ms "
              f"({ttfts[1][1]} prompt tokens reused)")
        model.release()


if __name__ == "__main__":
    flash_versus_eager()
    sliding_window_memory()
    prefix_caching_ttft()
