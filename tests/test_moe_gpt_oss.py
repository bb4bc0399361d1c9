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
from moe_fixtures import MOE_KNOBS
from tests.test_architectures import GREEDY, LONG_PROMPT, assert_same_generation

GPT_OSS = "GptOssForCausalLM"


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


def test_one_device_with_flash_partitions_matches_eager(moe_runs):
    """Batch 1 (a prompt longer than the sliding window, three prefill chunks) and the left-padded batch of 3."""
    run = moe_runs(GPT_OSS)
    assert_same_generation(run.on_one_device, run.eager)
    inputs = build_tokenizer()([LONG_PROMPT], return_tensors="pt")
    assert inputs.input_ids.shape[1] > 2 * 16
    assert_same_generation(run.one_device.generate(**inputs, **GREEDY), run.reference.generate(**inputs, **GREEDY))


@pytest.mark.parametrize("tp, ep", first_fast([(2, 2), (2, 1), (4, 4)], ids=["tp2-ep2", "tp2-ep1", "tp4-ep4"]))
def test_parallel_layouts_match_eager(moe_runs, tp, ep):
    run = moe_runs(GPT_OSS)
    model = NPUModelForCausalLM.from_model(run.reference, npu_config=MOE_KNOBS | {"tensor_parallel_size": tp,
                                                                                  "expert_parallel_size": ep})
    try:
        assert_same_generation(model.generate(**run.inputs, **GREEDY), run.eager)
        ops = {node.op for cost in model._runtime.engine.costs.values() for node in cost.index.graph.nodes}
        assert ("npu.moe_dispatch.default" in ops) == (ep > 1)
    finally:
        model.release()
