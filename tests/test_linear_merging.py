"""Sibling linears merged into one product (``device/linear_merging.py``): which linears merge, that every
member reads its own columns (as a view only where the graph's views allow it), and that a merged model gives
the tokens, logits (to rounding) and simulated figures of the separate products, on one rank and in lockstep."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from optimum_npu import NPUModelForCausalLM
from optimum_npu.device.executor import Program
from optimum_npu.device.kernels import packed_linear
from optimum_npu.device.kernels.linear import linear_kernel
from optimum_npu.device.linear_merging import (MERGED_LINEAR_ENV, LinearMerging, columns, contiguous_columns,
                                               merging_enabled)
from optimum_npu.device.lockstep_kernels import MergedShards, merged_column_linear, rank_columns
from optimum_npu.models.tiny import build_causal_lm, build_tokenizer
from optimum_npu.schema import Graph, Node, TensorSpec

ROWS, INNER = 4, 32
WIDTHS = {"q": 24, "k": 8, "v": 8}
PROMPTS = ["sibling linears read one merged product", "a"]


def _meta(shape: list[int]) -> dict:
    """A node's metadata as a validated graph carries it: output shape and dtype."""
    return {"shape": shape, "dtype": "float32"}


def _linear(name: str, x: str, weight: str, width: int, bias: str | None = None) -> Node:
    args = [{"ref": x}, {"ref": weight}] + ([{"ref": bias}] if bias else [])
    return Node(name, "aten.linear.default", args, {}, _meta([ROWS, 1, width]))


def _graph(name: str, *extra: Node, biases: bool = False, outputs: tuple[str, ...] = ("sum",)) -> Graph:
    """x -> q, k, v projections (with biases when asked) -> q + (k * v) repeated to q's width, plus ``extra``."""
    inputs = [TensorSpec("x", "input", (ROWS, 1, INNER), "float32")]
    nodes = []
    for proj, width in WIDTHS.items():
        inputs.append(TensorSpec(f"w_{proj}", "weight", (width, INNER), "float32", source=f"{proj}.weight"))
        if biases:
            inputs.append(TensorSpec(f"b_{proj}", "weight", (width,), "float32", source=f"{proj}.bias"))
        nodes.append(_linear(proj, "x", f"w_{proj}", width, f"b_{proj}" if biases else None))
    nodes += [Node("kv", "aten.mul.Tensor", [{"ref": "k"}, {"ref": "v"}], {}, _meta([ROWS, 1, 8])),
              Node("kv3", "aten.cat.default", [[{"ref": "kv"}] * 3, -1], {}, _meta([ROWS, 1, 24])),
              Node("sum", "aten.add.Tensor", [{"ref": "q"}, {"ref": "kv3"}], {}, _meta([ROWS, 1, 24])), *extra]
    return Graph(name, tuple(inputs), tuple(nodes), outputs)


def _weights(biases: bool = False) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    found = {f"{proj}.weight": torch.randn(width, INNER, generator=gen) for proj, width in WIDTHS.items()}
    if biases:
        found |= {f"{proj}.bias": torch.randn(width, generator=gen) for proj, width in WIDTHS.items()}
    return found


def _run(graph: Graph, weights: dict[str, torch.Tensor], x: torch.Tensor, merging: LinearMerging | None = None):
    """``graph`` on ``x``: with ``merging``, the merged product (weights of merged members not bound)."""
    merged = merging.pack(weights) if merging is not None else {}
    program = Program(graph, rewrites=merging.rewrites(graph, merged) if merged else None)
    arguments = [x if spec.kind == "input" else weights[spec.source] for spec in graph.inputs]
    return program.nodes.run(arguments), program


SOURCES = {"q.weight", "k.weight", "v.weight"}


@pytest.mark.parametrize("biases", [False, True])
def test_siblings_on_one_input_merge_and_each_reads_its_columns(biases):
    graph = _graph("decode", biases=biases)
    merging = LinearMerging({"decode": graph}, SOURCES)
    (group,) = merging.groups["decode"]
    assert group.members == ("q", "k", "v") and group.widths == (24, 8, 8) and merging.sources == SOURCES
    assert group.biases == (("q.bias", "k.bias", "v.bias") if biases else None)
    weights, x = _weights(biases), torch.randn(ROWS, 1, INNER)
    values, program = _run(graph, weights, x, merging)
    ops = [step.op for step in program.nodes.step_nodes]
    assert ops.count("host.merged_linear") == 1 and "aten.linear.default" not in ops
    slot = program.nodes.slot_of
    for proj in WIDTHS:
        bias = weights[f"{proj}.bias"] if biases else None
        torch.testing.assert_close(values[slot[proj]], F.linear(x, weights[f"{proj}.weight"], bias), rtol=0,
                                   atol=1e-5)
    assert values[slot["q"]].data_ptr() == values[slot[f"{group.members[0]}.merged"]].data_ptr()  # a view


def test_a_weight_read_alone_in_another_graph_or_unpacked_does_not_merge():
    alone = Node("q_again", "aten.linear.default", [{"ref": "sum"}, {"ref": "w_q"}], {},
                 _meta([ROWS, 1, 24]))
    merging = LinearMerging({"decode": _graph("decode"), "prefill": _graph("prefill", alone)}, SOURCES)
    assert [g.members for g in merging.groups["decode"]] == [] and merging.sources == set()
    partial = LinearMerging({"decode": _graph("decode")}, {"q.weight", "k.weight"})   # v is not packed
    assert [g.members for g in partial.groups["decode"]] == [("q", "k")]
    assert not LinearMerging({"decode": _graph("decode")}, {"q.weight"}).groups["decode"]   # one left: no group


def test_columns_are_copied_where_a_view_of_the_graph_could_not_read_them():
    heads = Node("heads", "aten.view.default", [{"ref": "q"}, [ROWS, 1, 3, 8]], {}, _meta([ROWS, 1, 3, 8]))
    doubled = Node("doubled", "aten.mul.Tensor", [{"ref": "heads"}, 2.0], {}, _meta([ROWS, 1, 3, 8]))
    flat = Node("flat", "aten.view.default", [{"ref": "k"}, [ROWS * 8]], {}, _meta([ROWS * 8]))
    turned = Node("turned", "aten.transpose.int", [{"ref": "v"}, 1, 2], {}, _meta([ROWS, 8, 1]))
    turned_flat = Node("turned_flat", "aten.view.default", [{"ref": "turned"}, [ROWS * 8]], {}, _meta([ROWS * 8]))
    graph = _graph("decode", heads, doubled, flat, turned, turned_flat, outputs=("sum", "doubled", "flat",
                                                                                  "turned_flat"))
    merging = LinearMerging({"decode": graph}, SOURCES)
    rewrites = merging.rewrites(graph, merging.pack(_weights()))
    parts = {step.name: step.fn for steps in rewrites.values() for step in steps}
    assert parts["q"] is columns                # splitting the last dim is a view of strided columns
    assert parts["k"] is contiguous_columns     # flattening [4, 1, 8] columns of a [4, 1, 40] product is not
    assert parts["v"] is contiguous_columns     # nor after a transpose (the view op is followed)
    values, program = _run(graph, _weights(), torch.randn(ROWS, 1, INNER), merging)
    assert values[program.nodes.slot_of["turned_flat"]].shape == (ROWS * 8,)
    as_output = _graph("decode", outputs=("sum", "q"))
    rewrites = LinearMerging({"decode": as_output}, SOURCES).rewrites(as_output, merging.pack(_weights()))
    assert {step.name: step.fn for steps in rewrites.values() for step in steps}["q"] is contiguous_columns  # caller's


def test_the_merge_switch(monkeypatch):
    monkeypatch.setenv(MERGED_LINEAR_ENV, "off")
    assert not merging_enabled()
    monkeypatch.setenv(MERGED_LINEAR_ENV, "1")
    assert merging_enabled()


def test_lockstep_merged_columns_are_each_ranks_product():
    n, gen = 2, torch.Generator().manual_seed(1)
    stacks = [torch.randn(n, width, INNER, generator=gen) for width in WIDTHS.values()]
    biases = [torch.randn(n, width, generator=gen) for width in WIDTHS.values()]
    x = torch.randn(ROWS, 1, INNER, generator=gen)
    for bias_list in (None, biases):
        y = merged_column_linear(linear_kernel, x, MergedShards(stacks, bias_list))   # packed: the device kernel
        start = 0
        for index, (stack, width) in enumerate(zip(stacks, WIDTHS.values())):
            got = rank_columns(y, start, width, n)                            # [N, ROWS, 1, width]
            for rank in range(n):
                bias = None if bias_list is None else bias_list[index][rank]
                torch.testing.assert_close(got[rank], F.linear(x, stack[rank], bias), rtol=0, atol=1e-5)
            start += n * width


# ---- a real model: merged against separate products ---------------------------------------------------------
@pytest.fixture(scope="module")
def hf_qwen2():
    """Qwen2: its query, key and value projections have biases."""
    return build_causal_lm("Qwen2ForCausalLM", num_attention_heads=8, num_key_value_heads=4, head_dim=8)


def _generate(model, inputs):
    out = model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False, output_logits=True,
                         return_dict_in_generate=True)
    return out.sequences, torch.stack(out.logits), model.npu_stats


@pytest.mark.parametrize("tp", [1, 2])
def test_merged_model_matches_separate_products(hf_qwen2, tp, monkeypatch):
    knobs = {"max_seq_len": 64, "batch_size": 2, "prefill_chunk_size": 16, "tensor_parallel_size": tp,
             "device": 0 if tp == 1 else tp}
    monkeypatch.setattr(packed_linear, "PACK_MIN_BYTES", 0)
    merged = NPUModelForCausalLM.from_model(hf_qwen2, npu_config=knobs)
    monkeypatch.setenv(MERGED_LINEAR_ENV, "0")
    separate = NPUModelForCausalLM.from_model(hf_qwen2, npu_config=knobs)
    inputs = build_tokenizer()(PROMPTS, return_tensors="pt", padding=True)
    try:
        engine = merged._runtime.engine
        if tp == 1:
            steps = [step.op for step in engine.ranks[0].programs["prefill"].nodes.step_nodes]
            assert steps.count("host.merged_linear") == 2 * hf_qwen2.config.num_hidden_layers   # qkv, gate/up
            assert sum(t is None for t in engine.ranks[0].bindings["prefill"]) == 5 * 2   # one copy of each weight
        else:
            steps = [step.fn for step in engine.lockstep_group.programs["prefill"].steps]
            assert steps.count(merged_column_linear) == 2 * hf_qwen2.config.num_hidden_layers
        got, want = _generate(merged, inputs), _generate(separate, inputs)
        eager = hf_qwen2.generate(**inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    finally:
        merged.release()
        separate.release()
    assert torch.equal(got[0], want[0]) and torch.equal(got[0], eager)
    torch.testing.assert_close(got[1], want[1], rtol=0, atol=1e-5)
    assert got[2] == want[2]                      # the simulated figures do not see the host's products
