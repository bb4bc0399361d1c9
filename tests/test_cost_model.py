"""The cost model on its own: calibrated factors, the fusion pass and its SRAM rule, collectives, host ops.

Graphs come from tiny models captured on the ``meta`` device (nothing runs) or are built by
hand; the expected numbers are worked out from the shapes in each test.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from optimum_npu.device.calibration import CALIBRATION, HOST_FLOPS, OP_CLASSES, efficiency
from optimum_npu.device.cost import GraphCostModel, OpCost, roofline_seconds
from optimum_npu.device.spec import PRESETS, NPUSpec
from optimum_npu.device.timeline import (DEVICE_HDMA, DEVICE_SYNC, EXTERNAL_HDMA, HOST, NEURAL_DMA, NEURAL_ENGINE)
from optimum_npu.models.decoder.estimate import meta_cost_models
from optimum_npu.models.tiny import build_causal_lm
from optimum_npu.schema import Graph, Node, TensorSpec

# tiny Llama: hidden 64, intermediate 128, 4 heads / 2 kv heads of 16, 2 layers
KNOBS = {"max_seq_len": 256, "batch_size": 2, "decoder_batch_sizes": [1, 2], "prefill_chunk_size": 64,
         "dtype": "float16", "attn_impl": "flash_attn", "kvcache_partition_len": 64}
ATOM = PRESETS["atom"]
NORM, ROPE, MLP = "fused(pow+mean+add+rsqrt+mul+to)", "fused(mul+neg+cat+add)", "fused(linear+silu+mul)"


def with_sram(spec: NPUSpec, sram_bytes: int) -> NPUSpec:
    return NPUSpec.from_dict(spec.to_dict() | {"name": f"{spec.name}-sram{sram_bytes}", "sram_bytes": sram_bytes})


@pytest.fixture(scope="module")
def graphs() -> dict[str, Graph]:
    _, costs = meta_cost_models(build_causal_lm("LlamaForCausalLM").config, KNOBS, ["prefill", "decoder_batch_2"])
    return {name: cost.index.graph for name, cost in costs.items()}


def prefill_positions(count: int = 64) -> torch.Tensor:
    return torch.arange(count).view(1, count)


DECODE_POSITIONS = torch.tensor([[100], [10]])  # contexts 101 and 11 -> 2 + 1 partitions of 64


def test_fusion_finds_norm_rotary_mlp_and_attention(graphs):
    cost = GraphCostModel(graphs["prefill"], ATOM, "float16")
    # 2 norms per layer + the final norm; rotary for q and k; one MLP and one attention per layer
    assert Counter(cost.fused_groups) == {NORM: 5, ROPE: 4, MLP: 2, "fused(paged_attention)": 2}
    names = [event.name for event in cost.timeline(prefill_positions())]
    assert names.count(MLP) == 2 and "silu" not in names and "rsqrt" not in names


@pytest.mark.parametrize("architecture, expected", [
    ("Qwen3ForCausalLM", {NORM: 9, MLP: 2}),  # + q/k norms per layer
    ("Gemma3ForCausalLM", {"fused(pow+mean+add+rsqrt+mul+type_as)": 13, "fused(linear+gelu+mul)": 2,
                           "fused(sliding_window_attention)": 1, "fused(paged_attention)": 1}),
])
def test_fusion_patterns_cover_other_architectures(architecture, expected):
    _, costs = meta_cost_models(build_causal_lm(architecture).config, KNOBS, ["prefill"])
    found = Counter(costs["prefill"].fused_groups)
    assert {name: found[name] for name in expected} == expected


@pytest.mark.parametrize("graph_name, positions", [("prefill", prefill_positions()),
                                                   ("decoder_batch_2", DECODE_POSITIONS)])
def test_fusion_lowers_the_estimate(graphs, graph_name, positions):
    fused = GraphCostModel(graphs[graph_name], ATOM, "float16")
    unfused = GraphCostModel(graphs[graph_name], ATOM, "float16", fuse=False)
    assert unfused.fused_groups == [] and fused.fused_groups
    assert fused.static_bytes < unfused.static_bytes
    assert fused.call_seconds(positions)[0] < 0.9 * unfused.call_seconds(positions)[0]
    assert fused.call_seconds(positions)[1] < unfused.call_seconds(positions)[1]  # scores stay on chip


def test_fused_mlp_reads_its_input_and_weights_once(graphs):
    cost = GraphCostModel(graphs["decoder_batch_2"], ATOM, "float16")
    mlp = next(unit for unit in cost.units if unit.name == MLP)
    x = out = 2 * 64 * 2                   # [2, 1, 64] fp16 in, same out
    weights = 3 * 64 * 128 * 2             # gate, up, down
    assert mlp.bytes == x + weights + out  # gate/act/up/mul outputs never reach DRAM


def test_no_sram_means_no_saving(graphs):
    no_sram = with_sram(ATOM, 0)
    for graph_name, positions in (("prefill", prefill_positions()), ("decoder_batch_2", DECODE_POSITIONS)):
        fused = GraphCostModel(graphs[graph_name], no_sram, "float16")
        unfused = GraphCostModel(graphs[graph_name], no_sram, "float16", fuse=False)
        assert fused.fused_groups == []
        assert fused.call_seconds(positions) == unfused.call_seconds(positions)
        assert fused.call_seconds(positions)[0] > GraphCostModel(graphs[graph_name], ATOM, "float16").call_seconds(
            positions)[0]


def test_a_group_is_fused_only_if_its_intermediates_fit(graphs):
    # prefill MLP intermediates: gate, act, up, gate*up, each [1, 64, 128] fp16 = 16 KiB -> 64 KiB
    just_fits = GraphCostModel(graphs["prefill"], with_sram(ATOM, 4 * 64 * 128 * 2), "float16")
    too_small = GraphCostModel(graphs["prefill"], with_sram(ATOM, 4 * 64 * 128 * 2 - 1), "float16")
    assert MLP in just_fits.fused_groups and MLP not in too_small.fused_groups
    assert NORM in too_small.fused_groups  # the norm's intermediates still fit


def test_unfused_attention_writes_and_reads_its_scores(graphs):
    cost = GraphCostModel(graphs["decoder_batch_2"], ATOM, "float16")
    node = cost.attention_nodes[0]
    fused = cost.attention_cost(node, DECODE_POSITIONS, fused=True)
    unfused = cost.attention_cost(node, DECODE_POSITIONS, fused=False)
    keys = 2 * 64 + 1 * 64  # flash partitions of 64 keys: 101 -> 2, 11 -> 1
    assert unfused.flops == fused.flops == 4 * 4 * 16 * 1 * keys
    assert unfused.bytes - fused.bytes == 4 * (4 * 1 * keys) * 2  # S written+read, P written+read, fp16


def test_calibration_has_a_sourced_factor_per_spec_and_op_class():
    for name in PRESETS:
        for op_class in OP_CLASSES:
            factors = efficiency(name, op_class)
            assert 0 < factors.compute <= 1 and 0 < factors.bandwidth <= 1 and len(factors.source) > 40
    assert efficiency("a100-80gb", "gemm").compute == pytest.approx(271.2 / 312, abs=0.005)  # MAMF
    assert efficiency("h100-sxm", "attention").compute == pytest.approx(740 / 989, abs=0.005)  # FA3
    for npu in ("atom", "rebel-quad", "rngd", "inferentia2"):
        assert "borrowed" in CALIBRATION[npu]["gemm"].source
    assert "borrowed" in efficiency("my-custom-npu", "gemv").source


def test_decode_shaped_matmuls_use_the_gemv_bandwidth(graphs):
    decode = GraphCostModel(graphs["decoder_batch_2"], ATOM, "float16", fuse=False)
    prefill = GraphCostModel(graphs["prefill"], ATOM, "float16", fuse=False)
    q_proj = lambda cost: next(n for n in cost.index.graph.nodes if n.op == "aten.linear.default")  # noqa: E731
    assert decode.op_cost(q_proj(decode)).kind == "gemv" and prefill.op_cost(q_proj(prefill)).kind == "gemm"
    assert roofline_seconds(OpCost(1.0, 1e9, "gemv"), ATOM, "float16") == pytest.approx(1e9 / (256e9 * 0.69))


def collective_graph(group_size: int) -> Graph:
    f16 = "float16"
    return Graph("tp", (TensorSpec("x", "input", (8, 1024), f16), TensorSpec("y", "input", (8, 1024), f16)), (
        Node("ar", "npu.all_reduce.default", [{"ref": "x"}, group_size], {}, {"shape": [8, 1024], "dtype": f16}),
        Node("ag", "npu.all_gather.default", [{"ref": "y"}, 1, group_size], {},
             {"shape": [8, 1024 * group_size], "dtype": f16}),
    ), ("ar", "ag"))


def test_collectives_are_costed_on_the_link():
    cost = GraphCostModel(collective_graph(4), ATOM, "float16")
    n, link, latency = 4, 64e9, 2e-6
    all_reduce = 2 * (n - 1) / n * (8 * 1024 * 2) / link + 2 * (n - 1) * latency
    all_gather = (n - 1) / n * (8 * 4096 * 2) / link + (n - 1) * latency
    total, attention = cost.call_seconds(torch.zeros(1, 1, dtype=torch.long))
    assert total == pytest.approx(all_reduce + all_gather) and attention == 0
    assert cost.collective_seconds == pytest.approx(total)
    events = cost.timeline(torch.zeros(1, 1, dtype=torch.long))
    assert [(e.name, e.category) for e in events] == [("all_reduce", DEVICE_SYNC), ("all_reduce", DEVICE_HDMA),
                                                      ("all_gather", DEVICE_SYNC), ("all_gather", DEVICE_HDMA)]
    assert events[0].duration_s == pytest.approx(2 * (n - 1) * latency)
    assert GraphCostModel(collective_graph(1), ATOM, "float16").static_seconds == 0  # a group of one


def test_host_fallback_ops_run_on_the_host_link():
    graph = Graph("host", (TensorSpec("x", "input", (1024,), "float32"),), (
        Node("c", "aten.cumsum.default", [{"ref": "x"}, 0], {}, {"shape": [1024], "dtype": "float32",
                                                                   "placement": "host"}),), ("c",))
    cost = GraphCostModel(graph, ATOM, "float32")
    copies = (4096 + 4096) / ATOM.host_link_bandwidth
    assert cost.static_seconds == pytest.approx(copies + 1024 / HOST_FLOPS)
    events = cost.timeline(torch.zeros(1, 1, dtype=torch.long))
    assert [(e.category, e.duration_s) for e in events] == [(EXTERNAL_HDMA, pytest.approx(copies)),
                                                           (HOST, pytest.approx(1024 / HOST_FLOPS))]


def test_timeline_tiles_the_call(graphs):
    cost = GraphCostModel(graphs["prefill"], ATOM, "float16")
    events = cost.timeline(prefill_positions(40), host_in_bytes=4096, host_out_bytes=1024)
    assert events[0].category == events[-1].category == EXTERNAL_HDMA
    assert all(b.start_s == pytest.approx(a.end_s) for a, b in zip(events, events[1:]))
    copies = (4096 + 1024) / ATOM.host_link_bandwidth
    assert events[-1].end_s == pytest.approx(cost.call_seconds(prefill_positions(40))[0] + copies, rel=1e-9)
    assert {e.category for e in events} <= {NEURAL_ENGINE, NEURAL_DMA, EXTERNAL_HDMA}
