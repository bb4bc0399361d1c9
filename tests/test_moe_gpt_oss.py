"""gpt-oss: its sparse block through ``npu.moe`` (top-k-then-softmax routing with a router bias, expert biases,
interleaved gate/up stored transposed, clamped SwiGLU) against the HF block, and the whole model (attention
sinks, a sliding-window layer then a global one, cos/sin per rotary frequency) against eager Transformers:
greedy tokens identical and logits within 1e-4, one device with flash partitions, and TP 2 with the experts
spread (EP 2) or replicated; EP 4 and torch.distributed with the whole suite."""

from __future__ import annotations

import pytest
import torch

from optimum_npu import NPUModelForCausalLM
from optimum_npu.device.kernels.moe import moe_kernel
from optimum_npu.models.tiny import build_causal_lm, build_tokenizer
from marks import first_fast
from tests.test_architectures import BATCH_PROMPTS, GREEDY, LONG_PROMPT, assert_same_generation

GPT_OSS = "GptOssForCausalLM"
KNOBS = {"max_seq_len": 128, "batch_size": 4, "decoder_batch_sizes": [1, 4], "prefill_chunk_size": 16}
FLASH = {"attn_impl": "flash_attn", "kvcache_block_size": 16, "kvcache_partition_len": 32}


def _block_forward(block, hidden: torch.Tensor, top_k: int, **changes) -> torch.Tensor:
    """The HF block's computation through ``moe_kernel``, as the static decoder emits it."""
    experts = block.experts
    flat = hidden.reshape(-1, hidden.shape[-1])
    logits = torch.nn.functional.linear(flat, block.router.weight, block.router.bias)
    arguments = dict(gate_up_bias=experts.gate_up_proj_bias, down_bias=experts.down_proj_bias,
                     softmax_after_topk=True, interleaved=True, swiglu_alpha=experts.alpha,
                     swiglu_limit=experts.limit) | changes
    out = moe_kernel(flat, logits, experts.gate_up_proj.transpose(1, 2), experts.down_proj.transpose(1, 2), top_k,
                     False, True, **arguments)
    return out.view(hidden.shape)


def test_kernel_matches_the_hf_gpt_oss_block():
    """Within 1e-6 in float32 with the clamp reached on both sides; each gpt-oss argument changes the numbers."""
    model = build_causal_lm(GPT_OSS)
    block, top_k = model.model.layers[0].mlp, model.config.num_experts_per_tok
    torch.manual_seed(1)
    hidden = 4 * torch.randn(3, 7, model.config.hidden_size)
    with torch.no_grad():
        expected, _ = block(hidden)
        got = _block_forward(block, hidden, top_k)
        states = hidden.reshape(-1, hidden.shape[-1]) @ block.experts.gate_up_proj[0] + block.experts.gate_up_proj_bias[0]
        limit = block.experts.limit
        assert (states[:, ::2] > limit).any() and (states[:, 1::2] < -limit).any()   # the clamp is exercised
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
        for change in ({"softmax_after_topk": False}, {"interleaved": False}, {"swiglu_limit": 0.0},
                       {"gate_up_bias": None}, {"down_bias": None}):
            assert (_block_forward(block, hidden, top_k, **change) - expected).abs().max() > 1e-3, change


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def reference():
    return build_causal_lm(GPT_OSS, num_key_value_heads=4)


def _compiled(reference, knobs: dict):
    model = NPUModelForCausalLM.from_model(reference, npu_config=KNOBS | knobs)
    assert model.npu_config.tensor_parallel_size == knobs.get("tensor_parallel_size", 1)
    return model


@pytest.fixture(scope="module")
def one_device(reference):
    model = _compiled(reference, FLASH)
    yield model
    model.release()


@pytest.mark.parametrize("prompts", [[LONG_PROMPT], BATCH_PROMPTS], ids=["batch1", "batch3-left-padded"])
def test_one_device_with_flash_partitions_matches_eager(one_device, reference, tokenizer, prompts):
    inputs = tokenizer(prompts, return_tensors="pt", padding=True)
    assert inputs.attention_mask.sum(-1).max() > 16   # longer than the sliding window
    assert_same_generation(one_device.generate(**inputs, **GREEDY), reference.generate(**inputs, **GREEDY))
    memory = one_device.npu_stats.memory
    assert memory["kv_cache"] > 0


@pytest.mark.parametrize("tp, ep", first_fast([(2, 2), (2, 1), (4, 4)], ids=["tp2-ep2", "tp2-ep1", "tp4-ep4"]))
def test_parallel_layouts_match_eager(reference, tokenizer, tp, ep):
    model = _compiled(reference, {"tensor_parallel_size": tp, "expert_parallel_size": ep})
    try:
        inputs = tokenizer(BATCH_PROMPTS, return_tensors="pt", padding=True)
        assert_same_generation(model.generate(**inputs, **GREEDY), reference.generate(**inputs, **GREEDY))
        ops = {node.op for cost in model._runtime.engine.costs.values() for node in cost.index.graph.nodes}
        assert ("npu.moe_dispatch.default" in ops) == (ep > 1)
    finally:
        model.release()
