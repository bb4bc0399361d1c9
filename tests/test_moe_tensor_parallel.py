"""Experts split by intermediate size under tensor parallelism (``expert_tensor_parallel``): every device holds
1/n of every routed expert (gate/up by output features, down by input features, an all-reduce after the
experts), the generation equals one device and eager Transformers, and memory per device counts only the shard.
The knob's refusals are with expert parallelism's, in ``test_moe.py``."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from optimum_npu import NPUModelForCausalLM
from optimum_npu.compile.tensor_parallel import cut_shard, weight_cut
from optimum_npu.models.adapters.moe import MIXTRAL
from optimum_npu.models.adapters.tp_plan import decoder_tp_plan
from optimum_npu.models.model_config import DecoderModelConfig
from optimum_npu.models.tiny import build_causal_lm
from marks import first_fast
from moe_fixtures import MOE_KNOBS
from tests.test_architectures import GREEDY, assert_same_generation

SPLIT = {"tensor_parallel_size": 2, "expert_tensor_parallel": True}


@pytest.mark.parametrize("architecture", first_fast(["GptOssForCausalLM", "MixtralForCausalLM",
                                                     "Qwen2MoeForCausalLM"]))
def test_split_experts_match_one_device_and_eager(moe_runs, architecture, tmp_path):
    run = moe_runs(architecture)
    model = NPUModelForCausalLM.from_model(run.reference, npu_config=MOE_KNOBS | SPLIT)
    try:
        got = model.generate(**run.inputs, **GREEDY)
        assert_same_generation(got, run.eager)
        assert_same_generation(got, run.on_one_device)
        graph = model._runtime.engine.costs["decoder_batch_4"].index.graph
        experts = {node.name for node in graph.nodes if node.op == "npu.moe.default"}
        reduced = {node.args[0]["ref"] for node in graph.nodes if node.op == "npu.all_reduce.default"}
        assert experts and experts <= reduced          # every rank's experts give a partial sum, all-reduced
        assert "npu.moe_dispatch.default" not in {node.op for node in graph.nodes}
        weights = model.npu_stats.memory["weights"]
        model.save_pretrained(tmp_path)
    finally:
        model.release()
    full = run.reference.state_dict()
    stored = 0
    for rank in range(2):
        with safe_open(str(tmp_path / f"model-tp{rank}-of-2.safetensors"), "pt") as shard:
            names = list(shard.keys())
            stored = max(stored, sum(shard.get_tensor(n).numel() * shard.get_tensor(n).element_size() for n in names))
            for name in names:
                if ".experts." in name and not name.endswith("down_proj_bias"):   # half of every expert
                    assert shard.get_tensor(name).numel() * 2 == full[name].numel(), name
    assert weights == stored   # the memory report is the shard each device holds


def test_mixtral_shards_keep_a_slice_of_both_gate_and_up():
    """gate_up [E, 2I, H] is [gate | up] along its rows: rank r keeps rows r*I/2.. of each half; down [E, H, I]
    keeps the matching input features."""
    model = build_causal_lm("MixtralForCausalLM")
    plan = decoder_tp_plan(MIXTRAL, DecoderModelConfig.from_hf(model.config), 2, expert_tensor_parallel=True)
    state = model.state_dict()
    inner = model.config.intermediate_size
    for rank in range(2):
        rows = slice(rank * inner // 2, (rank + 1) * inner // 2)
        pieces = {}
        for param in ("gate_up_proj", "down_proj"):
            name = f"model.layers.1.mlp.experts.{param}"
            cut = weight_cut(plan.split_of(name), name, tuple(state[name].shape))
            part = state[name].shape[cut.dim] // 2
            pieces[param] = cut_shard(state[name], cut.style, cut.dim, part, rank, 2, cut.parts)
        gate, up = state["model.layers.1.mlp.experts.gate_up_proj"].split(inner, dim=1)
        torch.testing.assert_close(pieces["gate_up_proj"], torch.cat([gate[:, rows], up[:, rows]], 1), rtol=0, atol=0)
        torch.testing.assert_close(pieces["down_proj"], state["model.layers.1.mlp.experts.down_proj"][:, :, rows],
                                   rtol=0, atol=0)
