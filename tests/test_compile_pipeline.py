"""The one compile pipeline: its pass order, one memory plan from the graphs that the planner, ``npu_stats`` and
the device reservation share exactly, sizing per weight dtype, and compiling that leaves the caller's model as it
was."""

from __future__ import annotations

import pytest
import torch

from optimum_npu import NPUModelForCausalLM
from optimum_npu.compile import pipeline
from optimum_npu.device.sizing import plan_graph_memory
from optimum_npu.models.decoder.estimate import meta_compile
from optimum_npu.models.decoder.export import graph_names
from optimum_npu.models.decoder.npu_config import NPUDecoderConfig
from optimum_npu.models.model_config import DecoderModelConfig
from optimum_npu.models.tiny import build_causal_lm
from optimum_npu.planner import plan

KNOBS = {"max_seq_len": 64, "batch_size": 2, "prefill_chunk_size": 16, "kvcache_block_size": 16}


def test_passes_run_in_the_documented_order():
    assert pipeline.PASSES == ("capture", "quantize", "fuse", "shard", "shape_propagation", "memory_plan")
    graphs, weights = {"g": object()}, {"w": torch.ones(1)}
    assert pipeline.quantize(graphs, weights) == (graphs, weights)  # the slot: no scheme exists yet


@pytest.mark.slow
@pytest.mark.parametrize("tp", [1, 2])
def test_planner_stats_and_device_reservation_agree_exactly(tp):
    """Four layers, so the planner extrapolates from shallow captures while the compile captures every layer."""
    hf_model = build_causal_lm("LlamaForCausalLM", num_hidden_layers=4)
    [planned] = plan(hf_model.config, KNOBS, tensor_parallel_sizes=[tp], prompt_lengths=[16])
    model = NPUModelForCausalLM.from_model(hf_model, npu_config=KNOBS | {"tensor_parallel_size": tp},
                                           compile_cache=False)
    try:
        planned_memory = {k: v for k, v in planned.memory_per_device_bytes.items() if k != "total"}
        # other models of the session may share these devices: compare this model's own reservations
        reservations = model._runtime.engine.reservations()
        assert len(reservations) == tp
        for reserved in reservations:
            assert {k: v for k, v in reserved.items() if v} == planned_memory
        assert model.npu_stats.memory == planned_memory
        assert set(planned_memory) == {"weights", "kv_cache", "workspace"} | ({"collective_buffers"} if tp > 1
                                                                               else set())
    finally:
        model.release()


def test_workspace_is_the_liveness_peak_not_the_formula():
    """The demo Llama's formula said 536,624 bytes of workspace; the graphs' liveness peak is what is reserved."""
    hf_config = build_causal_lm("LlamaForCausalLM", size="demo").config
    knobs = {"max_seq_len": 256, "batch_size": 4, "prefill_chunk_size": 32}
    config = NPUDecoderConfig.coerce(knobs).resolve(DecoderModelConfig.from_hf(hf_config))
    compiled = meta_compile(hf_config, config, graph_names(config))
    assert compiled.memory.workspace == 311_296
    assert compiled.memory.request() == {"weights": 12_336_192, "kv_cache": 4_194_304, "workspace": 311_296}


def test_weights_are_sized_per_tensor_dtype():
    hf_model = build_causal_lm("LlamaForCausalLM")
    config = NPUDecoderConfig.coerce(KNOBS | {"dtype": "bfloat16"}).resolve(DecoderModelConfig.from_hf(hf_model.config))
    graphs = meta_compile(hf_model.config, config, ["prefill"]).graphs
    tensors = [*hf_model.parameters(), hf_model.model.rotary_emb.inv_freq]  # every parameter, and the rotary table
    expected = sum(t.numel() * 2 for t in tensors)
    assert plan_graph_memory(graphs.values()).weights_by_dtype == {"bfloat16": expected}
    # one weight stored in float32 beside the bfloat16 ones is counted at 4 bytes per element
    graph = graphs["prefill"]
    first = next(s for s in graph.inputs if s.kind == "weight")
    mixed = type(graph)(graph.name, tuple(type(s)(s.name, s.kind, s.shape, "float32", s.source) if s is first else s
                                          for s in graph.inputs), graph.nodes, graph.outputs, graph.mutated_inputs,
                        graph.attributes)
    by_dtype = plan_graph_memory([mixed]).weights_by_dtype
    count = torch.Size(first.shape).numel()
    assert by_dtype["float32"] == 4 * count
    assert by_dtype["bfloat16"] == expected - 2 * count


def _state(model: torch.nn.Module) -> dict:
    return {"params": {n: (p.dtype, p.detach().clone()) for n, p in model.named_parameters()},
            "buffers": {n: (b.dtype, b.clone()) for n, b in model.named_buffers()},
            "modules": [(n, type(m).__name__, m.training) for n, m in model.named_modules()],
            "config_dtype": model.config.dtype}


@pytest.mark.parametrize("knobs", [{"dtype": "bfloat16"}, {"dtype": "float32", "tensor_parallel_size": 2}],
                         ids=["bfloat16", "tp2"])
def test_compiling_leaves_the_callers_model_unchanged(knobs):
    hf_model = build_causal_lm("LlamaForCausalLM").train()  # a mode compiling must not flip either
    before = _state(hf_model)
    model = NPUModelForCausalLM.from_model(hf_model, npu_config=KNOBS | knobs, compile_cache=False)
    try:
        after = _state(hf_model)
        assert after["modules"] == before["modules"] and after["config_dtype"] == before["config_dtype"]
        for kind in ("params", "buffers"):
            assert list(after[kind]) == list(before[kind])
            for name, (dtype, value) in before[kind].items():
                assert after[kind][name][0] == dtype == torch.float32, name
                assert torch.equal(after[kind][name][1], value), name
        bound = [t for t in model._runtime.engine.ranks[0].bindings["prefill"] if isinstance(t, torch.Tensor)]
        assert bound and all(t.dtype == getattr(torch, knobs["dtype"]) for t in bound if t.is_floating_point())
    finally:
        model.release()
