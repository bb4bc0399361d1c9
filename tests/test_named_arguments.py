"""The cost model, fusion and sizing read kernel arguments by their schema name (``schema_ops.ALLOWED_OPS``),
so a node that passes arguments as keywords costs exactly what the positional call costs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from optimum_npu.device.cost import GraphCostModel
from optimum_npu.device.ops import argument
from optimum_npu.device.sizing import kv_pool_of
from optimum_npu.device.spec import PRESETS
from optimum_npu.models.decoder.estimate import meta_cost_models
from optimum_npu.models.tiny import build_causal_lm
from optimum_npu.schema import Graph, Node
from optimum_npu.schema_ops import ALLOWED_OPS

KNOBS = {"max_seq_len": 128, "batch_size": 2, "decoder_batch_sizes": [2], "prefill_chunk_size": 32,
         "attn_impl": "flash_attn", "kvcache_partition_len": 32, "kvcache_block_size": 32}


@pytest.fixture(scope="module")
def graph() -> Graph:
    _, costs = meta_cost_models(build_causal_lm("LlamaForCausalLM").config, KNOBS, ["decoder_batch_2"])
    return costs["decoder_batch_2"].index.graph


def as_keywords(node: Node, keep: int = 1) -> Node:
    """The same call with every argument after the first ``keep`` passed by its schema name."""
    names = ALLOWED_OPS[node.op]
    kwargs = {names[i]: value for i, value in enumerate(node.args) if i >= keep}
    return dataclasses.replace(node, args=list(node.args[:keep]), kwargs={**node.kwargs, **kwargs})


def rewritten(graph: Graph, ops: set[str]) -> Graph:
    nodes = tuple(as_keywords(n) if n.op in ops else n for n in graph.nodes)
    changed = Graph(graph.name, graph.inputs, nodes, graph.outputs, graph.mutated_inputs, graph.attributes)
    changed.validate()  # keyword names are the schema's: still a valid graph
    return changed


def test_argument_reads_positions_and_keywords_by_schema_name(graph):
    node = next(n for n in graph.nodes if n.op == "npu.paged_attention.default")
    keyword = as_keywords(node)
    for name in ("block_table", "k_cache", "partition_len"):
        assert argument(keyword, name) == argument(node, name)
    assert argument(node, "partition_len") == 32
    assert argument(dataclasses.replace(node, args=node.args[:8]), "partition_len", 0) == 0  # left out: default
    with pytest.raises(KeyError, match="no argument 'window'"):
        argument(node, "window")


@pytest.mark.parametrize("ops", [{"npu.paged_attention.default"}, {"aten.linear.default"},
                                 {"aten.linear.default", "npu.paged_attention.default", "aten.mul.Tensor",
                                  "aten.add.Tensor", "aten.mean.dim", "aten.pow.Tensor_Scalar"}],
                         ids=["attention", "linear", "all"])
def test_a_kernel_call_with_keyword_arguments_costs_the_same(graph, ops):
    spec = PRESETS["atom"]
    positional, keyword = GraphCostModel(graph, spec, "float32"), GraphCostModel(rewritten(graph, ops), spec, "float32")
    positions = torch.tensor([[70], [5]])  # contexts 71 and 6: three and one partitions of 32
    assert keyword.call_seconds(positions) == positional.call_seconds(positions)
    assert keyword.fused_groups == positional.fused_groups and positional.fused_groups
    assert keyword.static_flops == positional.static_flops and keyword.static_bytes == positional.static_bytes


def test_kv_pools_are_found_by_argument_name(graph):
    pools = kv_pool_of(rewritten(graph, {"npu.paged_attention.default"}))
    caches = {s.name for s in graph.inputs_of_kind("kv_cache")}
    assert pools == dict.fromkeys(caches, "paged") == kv_pool_of(graph)
