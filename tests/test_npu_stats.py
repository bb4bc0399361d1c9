"""What npu_stats reports after generate(): time per phase, graphs used, device memory."""

from __future__ import annotations

import pytest
import torch

from optimum_npu import NPUModelForCausalLM
from optimum_npu.models.tiny import build_causal_lm, build_tokenizer

KNOBS = {"max_seq_len": 256, "batch_size": 2, "decoder_batch_sizes": [1, 2], "prefill_chunk_size": 32,
         "kvcache_block_size": 64, "attn_impl": "flash_attn", "kvcache_partition_len": 64, "device": 3}


@pytest.fixture(scope="module")
def model():
    compiled = NPUModelForCausalLM.from_model(build_causal_lm("LlamaForCausalLM"), npu_config=KNOBS)
    yield compiled
    compiled.release()


def generate(model, prompt_len: int, batch: int = 1, new_tokens: int = 4):
    ids = torch.randint(3, 200, (batch, prompt_len), generator=torch.Generator().manual_seed(prompt_len))
    return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                          do_sample=False)


def test_phases_buckets_and_memory(model):
    generate(model, prompt_len=70, batch=1, new_tokens=5)
    stats = model.npu_stats
    assert stats.buckets == {"prefill": 3, "decoder_batch_1": 4}  # 70 tokens = 3 chunks of 32
    assert stats.device.startswith("npu:3")
    assert stats.ttft_s > 0 and stats.decode_s_per_token > 0
    assert stats.tokens_per_s == pytest.approx(1 / stats.decode_s_per_token)
    # KV cache: 2 (k, v) x 2 layers x (2 slots x 4 blocks) x 2 kv heads x 64 tokens x 16 dims x 4 bytes
    assert stats.memory["kv_cache"] == 2 * 2 * 8 * 2 * 64 * 16 * 4
    weights = sum(p.numel() for p in build_causal_lm("LlamaForCausalLM").parameters()) * 4
    assert weights <= stats.memory["weights"] <= weights + 1024  # + rotary inv_freq
    assert 0 < stats.memory["workspace"] < stats.memory["weights"]
    assert "TTFT" in str(stats) and "decoder_batch_1 x4" in str(stats)


def test_flash_decode_time_follows_the_attended_partitions(model):
    generate(model, prompt_len=8)
    short = [s.attention_seconds for s in model.npu_stats.steps if s.phase == "decode"]
    generate(model, prompt_len=200)
    long = [s.attention_seconds for s in model.npu_stats.steps if s.phase == "decode"]
    assert len(set(short)) == 1 and len(set(long)) == 1  # same partition count within each run
    assert min(long) > 3 * max(short)  # 4 partitions of 64 against 1


def test_eager_decode_reads_the_whole_static_cache():
    eager = NPUModelForCausalLM.from_model(build_causal_lm("LlamaForCausalLM"), npu_config=KNOBS | {
        "attn_impl": "eager", "kvcache_partition_len": None, "device": 4})
    generate(eager, prompt_len=8)
    short = eager.npu_stats.steps[-1].attention_seconds
    generate(eager, prompt_len=200)
    assert eager.npu_stats.steps[-1].attention_seconds == short
    eager.release()


def test_ttft_grows_with_prompt_chunks(model):
    generate(model, prompt_len=20)
    one_chunk = model.npu_stats.ttft_s
    generate(model, prompt_len=100)
    four_chunks = model.npu_stats.ttft_s
    assert 3.5 * one_chunk < four_chunks


def test_batch_two_uses_the_batch_two_graph_and_is_cheaper_per_token(model):
    generate(model, prompt_len=16, batch=1, new_tokens=6)
    single = model.npu_stats
    generate(model, prompt_len=16, batch=2, new_tokens=6)
    double = model.npu_stats
    assert double.buckets["decoder_batch_2"] == 5 and "decoder_batch_1" not in double.buckets
    assert double.tokens_per_s > 1.5 * single.tokens_per_s  # weights are read once per step for both rows


def test_ttft_per_request_in_prefill_order(llama):
    """Rows prefill one after another: each row's first token waits for the rows before it; the last is the total."""
    ids = torch.tensor([[1, 5, 6, 7, 8], [1, 9, 10, 11, 12], [1, 13, 14, 15, 16]])
    llama.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=2, do_sample=False)
    stats = llama.model.npu_stats
    ttft = stats.request_ttft_s
    assert len(ttft) == 3 and 0 < ttft[0] < ttft[1] < ttft[2] == pytest.approx(stats.ttft_s)
    text = str(stats)
    assert "TTFT per request" in text and "3 requests prefilled in turn" in text and "3 prefill chunks" in text
