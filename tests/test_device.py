"""The simulated device on its own: specs, the executor's allow-list, the cost model, memory."""

from __future__ import annotations

import json

import pytest
import torch

from optimum_npu.compile.capture import capture
from optimum_npu.device.cost import GraphCostModel, OpCost, roofline_seconds
from optimum_npu.device.device import DEFAULT_REGISTRY, DeviceRegistry
from optimum_npu.device.engine import DeviceEngine
from optimum_npu.device.executor import Program, peak_activation_bytes
from optimum_npu.device.memory import DeviceMemory, DeviceOutOfMemoryError
from optimum_npu.device.profiler import Profiler
from optimum_npu.device.spec import PRESETS, NPUSpec, resolve_spec
from optimum_npu.schema import Graph, GraphFormatError


class TwoLinears(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.up = torch.nn.Linear(32, 128)
        self.down = torch.nn.Linear(128, 32)

    def forward(self, x):
        return self.down(torch.relu(self.up(x)))


@pytest.fixture(scope="module")
def mlp_graph():
    torch.manual_seed(0)
    module = TwoLinears().eval()
    graph, weights = capture(module, (torch.randn(8, 32),), "mlp", ["x"], ["input"])
    return module, graph, weights


def test_presets_carry_public_figures():
    atom = PRESETS["atom"]
    assert atom.dram_bytes == 16 * 10**9 and atom.dram_bandwidth == 256 * 10**9
    assert atom.peak_flops_for("float16") == 32e12 and atom.sram_bytes == 64 * 10**6
    assert PRESETS["h100-sxm"].dram_bandwidth == 3.35e12
    assert {"atom", "rebel-quad", "rngd", "inferentia2", "a100-40gb", "a100-80gb", "h100-sxm"} <= set(PRESETS)
    assert all(spec.source for spec in PRESETS.values())


def test_custom_spec_from_json(tmp_path):
    data = PRESETS["rngd"].to_dict() | {"name": "my-npu", "dram_bytes": 8 * 10**9}
    path = tmp_path / "my-npu.json"
    path.write_text(json.dumps(data))
    spec = resolve_spec(str(path))
    assert spec.name == "my-npu" and spec.dram_bytes == 8 * 10**9
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data | {"dram_bandwidth": -1}))
    with pytest.raises(ValueError, match="dram_bandwidth=-1 must be a positive number"):
        resolve_spec(str(bad))


def test_program_computes_the_module(mlp_graph):
    module, graph, weights = mlp_graph
    x = torch.randn(8, 32)
    tensors = [weights[s.source] if s.kind == "weight" else x for s in graph.inputs]
    reloaded = Graph.from_json(graph.to_json())
    # atol 1e-5 (issue 19): the device's linear kernel is weight-stationary for a few rows, another summation order
    torch.testing.assert_close(Program(reloaded)(*tensors), module(x), rtol=0, atol=1e-5)


def test_disallowed_operator_is_refused(mlp_graph):
    _, graph, _ = mlp_graph
    doc = json.loads(graph.to_json())
    doc["nodes"][0]["op"] = "builtins.eval.default"
    with pytest.raises(GraphFormatError, match="not allowed"):
        Graph.from_json(json.dumps(doc))
    doc["nodes"][0]["op"] = "aten.no_such_op.default"  # well-formed, but not in the exact allow-list
    with pytest.raises(GraphFormatError, match="not in the operator allow-list"):
        Graph.from_json(json.dumps(doc))


def test_cost_model_counts_matmul_flops(mlp_graph):
    _, graph, _ = mlp_graph
    cost = GraphCostModel(graph, PRESETS["atom"], "float32")
    expected_flops = 2 * 8 * 32 * 128 * 2  # two linears
    assert expected_flops <= cost.static_flops <= expected_flops * 1.1
    weight_bytes = (32 * 128 * 2 + 128 + 32) * 4
    assert cost.static_bytes >= weight_bytes


def test_roofline_takes_the_slower_bound():
    spec = PRESETS["atom"]
    memory_bound = roofline_seconds(OpCost(flops=1.0, bytes=1e9), spec, "float16")
    compute_bound = roofline_seconds(OpCost(flops=1e13, bytes=1.0), spec, "float16")
    # calibrated factors (optimum_npu/device/calibration.py): atom borrows the A100-80GB GEMM figures,
    # 0.87 of peak compute (MAMF) and 0.83 of peak bandwidth (gpt-fast)
    assert memory_bound == pytest.approx(1e9 / (256e9 * 0.83))
    assert compute_bound == pytest.approx(1e13 / (32e12 * 0.87))


def test_workspace_is_peak_of_live_intermediates(mlp_graph):
    _, graph, _ = mlp_graph
    # up-projection output [8,128] and its relu [8,128] are alive together at the peak
    assert peak_activation_bytes(graph) == 2 * 8 * 128 * 4


def test_device_memory_is_enforced_with_breakdown():
    memory = DeviceMemory("npu:0 (test)", capacity=1000)
    first = memory.reserve("model-a", {"weights": 600, "kv_cache": 100})
    with pytest.raises(DeviceOutOfMemoryError) as err:
        memory.reserve("model-b", {"weights": 200, "kv_cache": 150, "workspace": 10})
    assert "model-b does not fit" in str(err.value) and "kv_cache" in str(err.value)
    assert memory.used == 700  # the failed request allocated nothing
    memory.release(first)
    memory.reserve("model-b", {"weights": 200, "kv_cache": 150, "workspace": 10})
    assert memory.by_category() == {"weights": 200, "kv_cache": 150, "workspace": 10, "collective_buffers": 0}


def test_spec_equality_ignores_nothing():
    changed = NPUSpec.from_dict(PRESETS["atom"].to_dict() | {"dram_bytes": 1})
    assert changed != PRESETS["atom"]


def _engine(graph, weights, registry, profiler=None):
    nbytes = sum(t.nbytes for t in weights.values())
    return DeviceEngine({"mlp": graph}, PRESETS["atom"], [3], "float32", weights=lambda rank: weights,
                        weight_bytes=lambda rank: nbytes, owner="mlp", registry=registry, profiler=profiler)


def test_engine_runs_a_bucket_with_one_call_record(mlp_graph):
    module, graph, weights = mlp_graph
    registry, profiler = DeviceRegistry("test"), Profiler()
    engine = _engine(graph, weights, registry, profiler)
    try:
        device = registry.get(PRESETS["atom"], 3)
        assert device.memory.by_category("mlp")["weights"] == sum(t.nbytes for t in weights.values())
        x = torch.randn(8, 32)
        out, call = engine.run("mlp", {"x": x}, "test")
        # atol 1e-5 (issue 19): the device's linear kernel is weight-stationary for a few rows, another summation order
        torch.testing.assert_close(out, module(x), rtol=0, atol=1e-5)
        assert call.host_bytes == x.nbytes + out.nbytes and call.seconds == engine.costs["mlp"].static_seconds
        assert device.clock_s == pytest.approx(call.total_seconds) and call.total_seconds > 0
        assert sum(call.categories.values()) == pytest.approx(call.total_seconds)
        assert [(c.name, c.args["phase"]) for c in profiler.calls] == [("mlp", "test")]
    finally:
        engine.release()
    assert device.memory.used == 0


def test_registries_are_explicit_and_separate(mlp_graph):
    _, graph, weights = mlp_graph
    first, second = DeviceRegistry("a"), DeviceRegistry("b")
    engines = [_engine(graph, weights, first), _engine(graph, weights, first), _engine(graph, weights, second)]
    try:
        one = sum(t.nbytes for t in weights.values())
        assert first.get(PRESETS["atom"], 3).memory.by_category()["weights"] == 2 * one   # same device: shared DRAM
        assert second.get(PRESETS["atom"], 3).memory.by_category()["weights"] == one      # another node
        assert DEFAULT_REGISTRY.get(PRESETS["atom"], 3) is not first.get(PRESETS["atom"], 3)
        with pytest.raises(RuntimeError, match="still holds reservations"):
            first.reset()
    finally:
        for engine in engines:
            engine.release()
    first.reset()
    assert first.reserved_bytes() == 0 and first.devices == []
