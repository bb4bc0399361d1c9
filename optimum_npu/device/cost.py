"""First-order cost model: roofline time per op, max(flops / peak, bytes / bandwidth).

Each op's FLOPs and DRAM bytes come from the static shapes stored in the graph. Peak
compute and bandwidth are derated by achievable-efficiency factors: real kernels do not
reach the datasheet peak. The factors are first-order assumptions shared by all specs
(compute 0.7 for large matmuls, bandwidth 0.8 for streaming reads); they are the knobs a
calibration against measured hardware adjusts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from optimum_npu.device.kernels import ATTENTION_OPS
from optimum_npu.device.spec import NPUSpec
from optimum_npu.schema import Graph, Node, TensorSpec, dtype_from_name

COMPUTE_EFFICIENCY = 0.7
BANDWIDTH_EFFICIENCY = 0.8

#: Ops that only re-label memory: no FLOPs, no DRAM traffic.
FREE_OPS = {
    "aten.view.default", "aten.reshape.default", "aten.unsqueeze.default", "aten.squeeze.dim",
    "aten.permute.default", "aten.transpose.int", "aten.t.default", "aten.expand.default", "aten.slice.Tensor",
    "aten.alias.default", "aten._assert_tensor_metadata.default", "aten.to.device", "aten.arange.default",
    "aten.arange.start", "aten.detach.default", "aten.lift_fresh_copy.default", "getitem",
}
_MATMUL_OPS = {"aten.linear.default", "aten.mm.default", "aten.addmm.default", "aten.matmul.default",
               "aten.bmm.default"}
#: Ops that read only the rows they return (gathers).
_GATHER_OPS = {"aten.embedding.default", "aten.index.Tensor", "aten.index_select.default", "aten.gather.default"}


@dataclass(frozen=True)
class OpCost:
    flops: float
    bytes: float


def _nbytes(shape, dtype: str) -> int:
    return math.prod(shape) * dtype_from_name(dtype).itemsize


def roofline_seconds(cost: OpCost, spec: NPUSpec, dtype: str) -> float:
    compute = cost.flops / (spec.peak_flops_for(dtype) * COMPUTE_EFFICIENCY)
    memory = cost.bytes / (spec.dram_bandwidth * BANDWIDTH_EFFICIENCY)
    return max(compute, memory)


class GraphCostModel:
    """Static costs of a graph's ops, plus the context-dependent cost of its attention ops."""

    def __init__(self, graph: Graph, spec: NPUSpec, compute_dtype: str):
        self.spec = spec
        self.dtype = compute_dtype
        self._shapes: dict[str, tuple[list[int], str]] = {s.name: (list(s.shape), s.dtype) for s in graph.inputs}
        self._inputs: dict[str, TensorSpec] = {s.name: s for s in graph.inputs}
        self.static_seconds = 0.0
        self.static_flops = 0.0
        self.static_bytes = 0.0
        self.attention_nodes: list[Node] = []
        for node in graph.nodes:
            if "shape" in node.meta:
                self._shapes[node.name] = (node.meta["shape"], node.meta["dtype"])
            if node.op in ATTENTION_OPS:
                self.attention_nodes.append(node)
                continue
            cost = self.op_cost(node)
            self.static_flops += cost.flops
            self.static_bytes += cost.bytes
            self.static_seconds += roofline_seconds(cost, spec, compute_dtype)

    def _arg_shapes(self, node: Node) -> list[tuple[list[int], str]]:
        refs = [a["ref"] for a in node.args if isinstance(a, dict) and "ref" in a]
        return [self._shapes[r] for r in refs if r in self._shapes]

    def op_cost(self, node: Node) -> OpCost:
        if node.op in FREE_OPS or "shape" not in node.meta:
            return OpCost(0.0, 0.0)
        out_shape, out_dtype = node.meta["shape"], node.meta["dtype"]
        out_bytes = _nbytes(out_shape, out_dtype)
        args = self._arg_shapes(node)
        if node.op in _MATMUL_OPS:
            reduce_dim = args[0][0][-1] if node.op != "aten.addmm.default" else args[1][0][-1]
            flops = 2.0 * math.prod(out_shape) * reduce_dim
            return OpCost(flops, sum(_nbytes(s, d) for s, d in args) + out_bytes)
        if node.op in _GATHER_OPS:
            return OpCost(0.0, 2.0 * out_bytes)
        return OpCost(float(math.prod(out_shape)), sum(_nbytes(s, d) for s, d in args) + out_bytes)

    def attention_cost(self, node: Node, positions: torch.Tensor) -> OpCost:
        """Cost of one attention call given the query positions [B, S] (-1 = padding).

        The static-shape kernels compute every row of the graph, padding included. Eager
        paged attention reads the whole static cache (``blocks_per_seq x block_size`` keys);
        flash attention reads ``ceil(context / partition) x partition`` keys per sequence;
        the sliding-window kernel reads its ring plus the new tokens.
        """
        q_shape, q_dtype = self._shapes[node.args[0]["ref"]]
        cache_shape, cache_dtype = self._shapes[node.args[3]["ref"]]
        batch, seq, heads, head_dim = q_shape
        kv_heads = cache_shape[1]
        if node.op == "npu.sliding_window_attention.default":
            keys_per_row = [cache_shape[2] + seq] * batch
        else:
            table_shape, _ = self._shapes[node.args[5]["ref"]]
            static_keys = table_shape[1] * cache_shape[2]
            partition = node.args[8] if len(node.args) > 8 else 0
            if partition:
                context = (positions.max(dim=1).values + 1).tolist()                 # 0 for padding rows
                keys_per_row = [-(-ctx // partition) * partition for ctx in context]
            else:
                keys_per_row = [static_keys] * batch
        keys = sum(keys_per_row)
        itemsize = dtype_from_name(cache_dtype).itemsize
        flops = 4.0 * heads * head_dim * seq * keys
        new_tokens = int((positions >= 0).sum())
        kv_bytes = (keys + new_tokens) * 2 * kv_heads * head_dim * itemsize
        return OpCost(flops, kv_bytes + 2 * _nbytes(q_shape, q_dtype))

    def call_seconds(self, positions: torch.Tensor) -> tuple[float, float]:
        """(total, attention) simulated seconds of one graph call with query positions [B, S]."""
        attention = sum(roofline_seconds(self.attention_cost(node, positions), self.spec, self.dtype)
                        for node in self.attention_nodes)
        return self.static_seconds + attention, attention
