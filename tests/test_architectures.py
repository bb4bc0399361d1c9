"""Parity of the architectures added as adapters (models/adapters), against eager Transformers.

Adding an architecture is one adapter, one registry line and one line in ``ADDED`` below, which
runs: greedy tokens for batch 1 (a prompt of three prefill chunks) and a left-padded batch of 3,
logits within 1e-4 (float32) at every step, the same under tensor_parallel_size=2, and the
paged KV cache with flash partitions and prefix caching (paged + flash only for sliding-window
models: their rings hold no cacheable prefix).
"""

from __future__ import annotations

import pytest
from transformers import AutoConfig, AutoModel

from optimum_npu import NPUModelForCausalLM
from optimum_npu.models.adapters import MLP, DecoderAdapter
from optimum_npu.models.tiny import MODEL_TYPES, VOCAB_SIZE, build_causal_lm, build_tokenizer
from marks import first_fast

#: architecture -> prefix caching allowed
ADDED = {
    "GPT2LMHeadModel": True,
    "OPTForCausalLM": True,
    "PhiForCausalLM": True,
    "Phi3ForCausalLM": True,
    "GemmaForCausalLM": True,
    "Gemma2ForCausalLM": False,
    "MixtralForCausalLM": True,
    "Qwen2MoeForCausalLM": True,
    "Qwen3MoeForCausalLM": True,
    "GptOssForCausalLM": False,    # MoE (tests/test_moe_gpt_oss.py): sliding-window layers, no prefix caching
}
#: Quick tier: the MoE parity of tests/test_moe.py; their full parity runs with the whole suite.
MOE = {"MixtralForCausalLM", "Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM", "GptOssForCausalLM"}
LONG_PROMPT = "The quick brown fox jumps over the lazy dog"   # 43 tokens: three prefill chunks of 16
BATCH_PROMPTS = ["Once upon a time, far", "hi", "Hello world!"]  # 21, 2 and 12 tokens, left-padded
SHARED_PREFIX = ["A shared system prompt that is longer than two blocks of sixteen. User: hi",
                 "A shared system prompt that is longer than two blocks of sixteen. User: how are you?", "short"]
PAGED_FLASH = {"max_seq_len": 128, "batch_size": 3, "decoder_batch_sizes": [1, 3], "prefill_chunk_size": 16,
               "kvcache_block_size": 16, "attn_impl": "flash_attn", "kvcache_partition_len": 32}
#: min_new_tokens: a random tiny model may emit EOS early; every run takes all 24 steps
GREEDY = dict(max_new_tokens=24, min_new_tokens=24, do_sample=False, output_logits=True, return_dict_in_generate=True)


def assert_same_generation(got, want) -> None:
    """Same tokens, and logits within 1e-4 at every step."""
    assert got.sequences.tolist() == want.sequences.tolist()
    assert len(got.logits) == len(want.logits) == GREEDY["max_new_tokens"]
    for step, (actual, expected) in enumerate(zip(got.logits, want.logits)):
        diff = (actual - expected).abs().max().item()
        assert diff <= 1e-4, f"step {step}: max |logits diff| = {diff:.3g} > 1e-4"


@pytest.mark.parametrize("prompts", [[LONG_PROMPT], BATCH_PROMPTS], ids=["batch1", "batch3-left-padded"])
@pytest.mark.parametrize("architecture", [pytest.param(a, marks=pytest.mark.slow) if a in MOE else a for a in ADDED])
def test_greedy_and_logits_match_eager(make_compiled, tokenizer, architecture, prompts):
    pair = make_compiled(architecture)
    inputs = tokenizer(prompts, return_tensors="pt", padding=True)
    assert inputs.attention_mask.sum(-1).max() > 16  # one prompt spans more than one prefill chunk

    assert_same_generation(pair.model.generate(**inputs, **GREEDY), pair.ref.generate(**inputs, **GREEDY))
    buckets = pair.model.npu_stats.buckets  # 3 sequences run on the batch-4 graph
    assert buckets[f"decoder_batch_{1 if len(prompts) == 1 else 4}"] == GREEDY["max_new_tokens"] - 1


@pytest.mark.slow
@pytest.mark.parametrize("architecture", list(ADDED))
def test_tensor_parallel_2_matches_eager(make_compiled, tokenizer, architecture):
    pair = make_compiled(architecture, {"tensor_parallel_size": 2})
    assert pair.model.npu_stats.tensor_parallel_size == 2
    inputs = tokenizer(BATCH_PROMPTS, return_tensors="pt", padding=True)

    assert_same_generation(pair.model.generate(**inputs, **GREEDY), pair.ref.generate(**inputs, **GREEDY))


@pytest.mark.parametrize("architecture", first_fast(sorted(ADDED, key=lambda name: name != "Phi3ForCausalLM")))
def test_paged_flash_prefix_caching_matches_eager(architecture, tokenizer):
    caching = ADDED[architecture]
    reference = build_causal_lm(architecture)
    model = NPUModelForCausalLM.from_model(reference, npu_config=PAGED_FLASH | {"enable_prefix_caching": caching})
    try:
        inputs = tokenizer(SHARED_PREFIX, return_tensors="pt", padding=True)
        expected = reference.generate(**inputs, **GREEDY)
        assert_same_generation(model.generate(**inputs, **GREEDY), expected)
        assert_same_generation(model.generate(**inputs, **GREEDY), expected)  # now the shared blocks hit
        hits = model.npu_stats.prefix_hit_tokens
        assert hits >= 3 * 16 if caching else hits == 0
    finally:
        model.release()


HEADLESS = [  # a class without an LM head -> the class to export
    ("LlamaModel", "LlamaForCausalLM"),
    ("GPT2Model", "GPT2LMHeadModel"),
    ("OPTModel", "OPTForCausalLM"),
]


@pytest.mark.parametrize("base, use", HEADLESS)
def test_model_without_lm_head_is_refused_naming_the_class_to_use(tmp_path, base, use):
    config = AutoConfig.for_model(MODEL_TYPES[use], vocab_size=VOCAB_SIZE, hidden_size=32, num_hidden_layers=1,
                                  num_attention_heads=2, architectures=[base])
    AutoModel.from_config(config).save_pretrained(tmp_path)
    build_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=rf"{base} has no language-model head: export {use} \(a decoder's hidden "
                                         "states are not compiled on their own; feature extraction is compiled for "
                                         "encoder checkpoints"):
        NPUModelForCausalLM.from_pretrained(tmp_path, export=True)


def test_unsupported_variant_is_refused_naming_the_knob():
    model = build_causal_lm("OPTForCausalLM", do_layer_norm_before=False)
    with pytest.raises(ValueError, match=r"OPTForCausalLM with do_layer_norm_before=False is not supported .*"
                                         r"use a checkpoint with do_layer_norm_before=True"):
        NPUModelForCausalLM.from_model(model, npu_config={"max_seq_len": 64})


def test_adapter_layout_values_are_checked():
    with pytest.raises(ValueError, match=r"adapter mlp.kind='swiglu' is not known; choose one of"):
        DecoderAdapter(mlp=MLP("swiglu"))
    with pytest.raises(ValueError, match=r"adapter block='parallel' with norms=\['input_layernorm', "
                                         r"'post_attention_layernorm'\]"):
        DecoderAdapter(block="parallel")
