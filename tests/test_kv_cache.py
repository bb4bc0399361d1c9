"""Paged KV cache, flash partitions, sliding-window rings and prefix caching, against eager Transformers."""

from __future__ import annotations

import json

import pytest
import torch

from marks import first_fast

from optimum_npu import NPUModelForCausalLM
from optimum_npu.device.spec import PRESETS
from optimum_npu.runtime import BlockManager, KVCacheFullError, Sequence
from optimum_npu.models.decoder.npu_config import NPUDecoderConfig
from optimum_npu.models.model_config import DecoderModelConfig
from optimum_npu.models.tiny import build_causal_lm, build_tokenizer

PAGED_FLASH = {"max_seq_len": 128, "batch_size": 3, "decoder_batch_sizes": [1, 3], "prefill_chunk_size": 16,
               "kvcache_block_size": 16, "attn_impl": "flash_attn", "kvcache_partition_len": 32}
# (architecture, model overrides, prefix caching?) -- sliding-window models keep rings, not cacheable prefixes
CASES = [
    ("LlamaForCausalLM", {}, True),
    ("MistralForCausalLM", {"sliding_window": None}, True),
    ("MistralForCausalLM", {"sliding_window": 16}, False),
    ("Qwen2ForCausalLM", {}, True),
    ("Qwen3ForCausalLM", {}, True),
    ("Gemma3ForCausalLM", {}, False),
]
PROMPTS = ["A shared system prompt that is longer than two blocks of sixteen. User: hi",
           "A shared system prompt that is longer than two blocks of sixteen. User: how are you?", "short"]


def eager_reference(architecture, overrides):
    model = build_causal_lm(architecture, **overrides)
    model.config._attn_implementation = "eager"
    return model


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.mark.parametrize("architecture, overrides, prefix_caching",
                         first_fast(CASES, ids=[f"{a}-{o.get('sliding_window', 'default')}" for a, o, _ in CASES]))
def test_paged_flash_prefix_cached_generation_matches_eager(architecture, overrides, prefix_caching, tokenizer):
    reference = eager_reference(architecture, overrides)
    model = NPUModelForCausalLM.from_model(reference, npu_config=PAGED_FLASH | {
        "enable_prefix_caching": prefix_caching})
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    kwargs = dict(max_new_tokens=30, do_sample=False, output_logits=True, return_dict_in_generate=True)
    expected = reference.generate(**inputs, **kwargs)
    first = model.generate(**inputs, **kwargs)
    second = model.generate(**inputs, **kwargs)  # with prefix caching, the prompts' full blocks now hit
    for run in (first, second):
        assert torch.equal(run.sequences, expected.sequences)
        for got, want in zip(run.logits, expected.logits):
            torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    if prefix_caching:
        assert model.npu_stats.prefix_hit_tokens >= 3 * 16
        assert "prefix cache hits" in str(model.npu_stats)
    else:
        assert model.npu_stats.prefix_hit_tokens == 0
    model.release()


@pytest.mark.parametrize("architecture", ["MistralForCausalLM", "Gemma3ForCausalLM"])
def test_sliding_layers_keep_only_the_window(architecture):
    model_config = DecoderModelConfig.from_hf(build_causal_lm(architecture, sliding_window=16).config)
    sliding = NPUDecoderConfig(**{**PAGED_FLASH, "attn_impl": None, "kvcache_partition_len": None}).resolve(
        model_config)
    from optimum_npu.models.decoder.memory_plan import kv_pool_bytes

    pools = kv_pool_bytes(model_config, sliding)
    per_token_layer = 2 * model_config.num_kv_heads * model_config.head_dim * 4
    sliding_layers = sum(model_config.is_sliding(i) for i in range(model_config.num_layers))
    assert pools["sliding"] == sliding_layers * 3 * 16 * per_token_layer   # 3 slots x 16-token window
    global_layers = model_config.num_layers - sliding_layers
    assert pools["paged"] == global_layers * sliding.kvcache_num_blocks * 16 * per_token_layer


def test_flash_and_eager_agree_on_long_context(tokenizer):
    reference = eager_reference("LlamaForCausalLM", {})
    prompt = tokenizer(["x" * 180], return_tensors="pt")
    outputs = {}
    for impl, extra in (("eager", {}), ("flash_attn", {"kvcache_partition_len": 64})):
        model = NPUModelForCausalLM.from_model(reference, npu_config={
            "max_seq_len": 256, "prefill_chunk_size": 64, "kvcache_block_size": 64, "attn_impl": impl, **extra})
        outputs[impl] = model.generate(**prompt, max_new_tokens=8, do_sample=False, output_logits=True,
                                       return_dict_in_generate=True)
        model.release()
    assert torch.equal(outputs["eager"].sequences, outputs["flash_attn"].sequences)
    for a, b in zip(outputs["eager"].logits, outputs["flash_attn"].logits):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_prefix_caching_cuts_ttft(tokenizer):
    model = NPUModelForCausalLM.from_model(eager_reference("LlamaForCausalLM", {}), npu_config={
        "max_seq_len": 256, "prefill_chunk_size": 16, "kvcache_block_size": 16, "enable_prefix_caching": True})
    system = "You are a helpful assistant running on a simulated NPU. " * 3
    model.generate(**tokenizer([system + "Question one?"], return_tensors="pt"), max_new_tokens=2)
    cold = model.npu_stats
    model.generate(**tokenizer([system + "Another question?"], return_tensors="pt"), max_new_tokens=2)
    warm = model.npu_stats
    assert cold.prefix_hit_tokens == 0 and warm.prefix_hit_tokens == (len(system) // 16) * 16
    assert warm.ttft_s < 0.5 * cold.ttft_s
    model.release()


def test_out_of_blocks_is_a_clear_error(tokenizer):
    model = NPUModelForCausalLM.from_model(eager_reference("LlamaForCausalLM", {}), npu_config={
        "max_seq_len": 64, "batch_size": 2, "prefill_chunk_size": 16, "kvcache_block_size": 16,
        "kvcache_num_blocks": 4})
    inputs = tokenizer(["a" * 30, "b" * 30], return_tensors="pt")
    with pytest.raises(KVCacheFullError, match="all 4 blocks of 16 tokens are in use; raise kvcache_num_blocks"):
        model.generate(**inputs, max_new_tokens=10, min_new_tokens=10)
    assert model._runtime.blocks.used_blocks == 0  # generate() returned every block despite the error
    model.release()


def test_default_pool_is_sized_from_memory_left_after_weights(tmp_path):
    model_config = DecoderModelConfig.from_hf(build_causal_lm("LlamaForCausalLM").config)
    per_block = 2 * model_config.num_layers * 16 * model_config.num_kv_heads * model_config.head_dim * 4
    weights = model_config.num_parameters * 4
    spec = PRESETS["atom"].to_dict() | {"name": "small", "dram_bytes": weights + 200_000 + 10 * per_block}
    path = tmp_path / "small.json"
    path.write_text(json.dumps(spec))
    config = NPUDecoderConfig(max_seq_len=64, batch_size=8, kvcache_block_size=16, prefill_chunk_size=16,
                              npu=str(path)).resolve(model_config)
    assert 4 <= config.kvcache_num_blocks < 8 * 4           # fewer than batch x blocks per sequence
    roomy = NPUDecoderConfig(max_seq_len=64, batch_size=8, kvcache_block_size=16).resolve(model_config)
    assert roomy.kvcache_num_blocks == 8 * 4                 # capped at what the batch can use


def prompt(request_id, tokens) -> Sequence:
    return Sequence(request_id, list(tokens))


class TestBlockManager:
    def test_allocates_as_sequences_grow_and_frees(self):
        manager = BlockManager(num_blocks=4, block_size=4, enable_prefix_caching=False)
        seq = prompt(0, range(5))
        assert manager.allocate(seq) == 0
        assert manager.tables[0] == [0, 1] and manager.used_blocks == 2
        seq.token_ids += [5, 6, 7, 8]                  # 9 positions
        manager.append([seq])
        assert manager.tables[0] == [0, 1, 2]
        manager.free(seq)
        assert manager.used_blocks == 0 and sorted(manager.free_blocks) == [0, 1, 2, 3]

    def test_prefix_blocks_are_shared_and_refcounted(self):
        manager = BlockManager(num_blocks=8, block_size=4, enable_prefix_caching=True)
        first = prompt(0, range(10))
        manager.allocate(first)
        manager.written(first, 10)
        second = prompt(1, list(range(8)) + [99, 98])
        hit = manager.allocate(second)
        assert hit == 8 and manager.tables[1][:2] == manager.tables[0][:2] and second.num_computed == 8
        assert manager.ref_count[manager.tables[0][0]] == 2
        manager.free(first)
        assert manager.ref_count[manager.tables[1][0]] == 1

    def test_whole_prompt_hit_still_prefills_its_last_block(self):
        manager = BlockManager(num_blocks=8, block_size=4, enable_prefix_caching=True)
        first = prompt(0, range(8))
        manager.allocate(first)
        manager.written(first, 8)
        manager.free(first)
        assert manager.allocate(prompt(1, range(8))) == 4  # one block recomputed for the last token's logits

    def test_lru_eviction_of_unused_cached_blocks(self):
        manager = BlockManager(num_blocks=4, block_size=2, enable_prefix_caching=True)
        for request, tokens in enumerate(([1, 2, 3], [4, 5, 6])):
            seq = prompt(request, tokens)
            manager.allocate(seq)
            manager.written(seq, 2)                  # the first block of each prompt becomes cached
            manager.free(seq)
        assert len(manager.cached) == 2 and manager.used_blocks == 0
        seq = prompt(0, [7, 8, 9, 10, 11])          # 3 blocks: 2 free ones + the least recently used ([1, 2])
        manager.allocate(seq)
        manager.free(seq)
        seq = prompt(1, [4, 5, 0])
        assert manager.allocate(seq) == 2
        manager.free(seq)
        assert manager.allocate(prompt(2, [1, 2, 0])) == 0
        refused = prompt(3, range(20))
        assert not manager.can_allocate(refused)
        with pytest.raises(KVCacheFullError, match="raise kvcache_num_blocks"):
            manager.allocate(refused)
        assert 3 not in manager.tables               # a refused sequence keeps no blocks

    def test_query_then_mutate_all_or_nothing(self):
        """can_append answers without changing anything; append reserves every sequence's blocks or none."""
        manager = BlockManager(num_blocks=4, block_size=2, enable_prefix_caching=False, max_sequences=2)
        a, b = prompt("a", [1, 2, 3]), prompt("b", [4, 5])
        manager.allocate(a), manager.allocate(b)
        assert (a.slot, b.slot) == (0, 1) and manager.num_free_blocks == 1
        a.token_ids.append(6)                        # a: 4 positions (no new block); b: 3 (one new block)
        b.token_ids.append(7)
        assert manager.can_append([a, b])
        b.token_ids += [8, 9]                        # b: 5 positions: two new blocks, one free
        assert not manager.can_append([a, b]) and manager.num_free_blocks == 1
        with pytest.raises(KVCacheFullError, match="all 4 blocks"):
            manager.append([a, b])
        assert manager.tables == {"a": [0, 1], "b": [2]} and manager.num_free_blocks == 1   # nothing reserved
        assert not manager.can_allocate(prompt("c", [1]))                                    # no slot left
        manager.preempt(a)
        assert a.status.value == "preempted" and a.num_computed == 0 and a.slot is None
        assert manager.can_append([b]) and manager.can_allocate(prompt("c", [1]))
        manager.append([b])
        assert len(manager.tables["b"]) == 3 and prompt("c", [1]).request_id not in manager.slots


def test_sliding_layers_of_one_call_share_the_ring_index_arithmetic(monkeypatch):
    """Every sliding layer of a graph call reads the same positions and slots: their index arithmetic is done once,
    gives what a fresh computation gives, and is redone when the positions change."""
    from optimum_npu.device.kernels import sliding_window_attention as sliding

    computed = []
    ring_call = sliding._ring_call
    monkeypatch.setattr(sliding, "_ring_call", lambda *args: computed.append(args) or ring_call(*args))
    monkeypatch.setattr(sliding, "_MEMO", sliding.CallMemo())
    gen = torch.Generator().manual_seed(0)
    positions, slots = torch.tensor([[5, 6, -1], [9, 10, 11]]), torch.tensor([1, 0], dtype=torch.int32)
    query, key, value = (torch.randn(2, 3, n, 8, generator=gen) for n in (4, 2, 2))
    rings = [[torch.randn(3, 2, 4, 8, generator=gen) for _ in range(2)] for _ in range(3)]
    outs = [sliding.sliding_window_attention_kernel(query, key, value, k, v, slots, positions, 4, 0.35)
            for k, v in rings]
    assert len(computed) == 1                                                   # three layers, one computation
    fresh = ring_call(positions, slots, 4)
    assert torch.equal(fresh.key_pos, sliding._MEMO._entry[3].key_pos)
    assert torch.equal(rings[0][0][1, :, 5 % 4], key[0, 0]) and torch.equal(rings[2][1][0, :, 11 % 4], value[1, 2])
    assert not torch.equal(outs[0], outs[1])                                   # each layer its own ring
    positions.add_(1)                                                           # an in-place change: computed again
    sliding.sliding_window_attention_kernel(query, key, value, *rings[0], slots, positions, 4, 0.35)
    assert len(computed) == 2
