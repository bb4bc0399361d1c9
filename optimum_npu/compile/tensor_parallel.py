"""Tensor parallelism as a compiler pass over graphs.

``shard_graph`` turns a one-device graph into the graph every device of an N-way
tensor-parallel group runs (the same graph on each rank: only the weights differ):

- column-parallel linears (q/k/v, gate/up) keep 1/N of their output features, so each
  device holds 1/N of the attention heads and of the MLP columns, and 1/N of the KV
  cache (split by key/value heads);
- row-parallel linears (o, down) keep 1/N of their input features and are followed by
  an ``npu.all_reduce`` that sums the partial results;
- the logits projection keeps 1/N of the vocabulary (padded up to a multiple of N with
  zero rows, sliced off after gathering), followed by an ``npu.all_gather``;
- embeddings and norms are replicated.

``shard_weights`` cuts each rank's tensors to match. Which weights are column- or
row-parallel comes from a ``TensorParallelPlan`` of weight-name patterns (for HF models,
their own ``base_model_tp_plan``).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import torch

from optimum_npu.compile.shape_prop import propagate_shapes
from optimum_npu.schema import ALL_GATHER, ALL_REDUCE, Graph, Node, TensorSpec

LINEAR = "aten.linear.default"


class TensorParallelError(ValueError):
    """A graph cannot be split over the requested number of devices."""


@dataclass(frozen=True)
class TensorParallelPlan:
    """How to split a model's weights over ``size`` devices.

    Attributes:
        size: devices in the tensor-parallel group.
        colwise / rowwise: regular expressions over weight names (without ``.weight``/``.bias``).
    """

    size: int
    colwise: tuple[str, ...]
    rowwise: tuple[str, ...]

    @classmethod
    def from_hf(cls, size: int, hf_plan: dict[str, str], prefix: str = "model.") -> "TensorParallelPlan":
        """From an HF ``base_model_tp_plan`` such as ``{"layers.*.self_attn.q_proj": "colwise"}``."""
        def regex(pattern: str) -> str:
            return "^" + re.escape(prefix + pattern).replace(r"\*", r"\d+") + "$"

        colwise = tuple(regex(p) for p, style in hf_plan.items() if style.startswith("colwise"))
        rowwise = tuple(regex(p) for p, style in hf_plan.items() if style.startswith("rowwise"))
        return cls(size, colwise, rowwise)

    def style_of(self, weight_name: str) -> str | None:
        module = weight_name.rsplit(".", 1)[0]
        if any(re.match(p, module) for p in self.colwise):
            return "colwise"
        if any(re.match(p, module) for p in self.rowwise):
            return "rowwise"
        return None


def _logits_linear(graph: Graph) -> Node:
    """The last linear of the graph: the projection to the vocabulary."""
    linears = [node for node in graph.nodes if node.op == LINEAR]
    if not linears:
        raise TensorParallelError(f"graph {graph.name!r} has no linear layer to split")
    return linears[-1]


def _ref(value) -> str | None:
    return value["ref"] if isinstance(value, dict) and "ref" in value else None


def weight_roles(graph: Graph, plan: TensorParallelPlan) -> dict[str, tuple[str, int]]:
    """Input name -> (style, dim) for every weight input that is split."""
    inputs = {spec.name: spec for spec in graph.inputs}
    roles: dict[str, tuple[str, int]] = {}
    for node in graph.nodes:
        if node.op != LINEAR:
            continue
        weight, bias = _ref(node.args[1]), _ref(node.args[2]) if len(node.args) > 2 else None
        style = plan.style_of(inputs[weight].source) if weight in inputs else None
        if style == "colwise":
            roles[weight] = ("colwise", 0)
            if bias:
                roles[bias] = ("colwise", 0)
        elif style == "rowwise":
            roles[weight] = ("rowwise", 1)
            if bias:
                roles[bias] = ("rowwise_bias", 0)
    head = _logits_linear(graph)
    roles[_ref(head.args[1])] = ("vocab", 0)
    return roles


def _divide(extent: int, what: str, plan: TensorParallelPlan) -> int:
    if extent % plan.size:
        divisors = [d for d in range(1, min(extent, 64) + 1) if extent % d == 0]
        raise TensorParallelError(
            f"tensor_parallel_size={plan.size} does not divide the {extent} {what}; choose a "
            f"tensor_parallel_size among {divisors}"
        )
    return extent // plan.size


@dataclass(frozen=True)
class _SplitInput:
    spec: TensorSpec          # the input of the sharded graph
    full_source: str | None   # the one-device tensor it is cut from
    style: str                # replicate / colwise / rowwise / rowwise_bias / vocab / kv_cache
    dim: int


def _split_layout(graph: Graph, plan: TensorParallelPlan):
    """Inputs of the sharded graph and the name of the logits projection's weight input."""
    roles = weight_roles(graph, plan)
    head_weight = _ref(_logits_linear(graph).args[1])
    tied = sum(1 for node in graph.nodes for arg in node.args if _ref(arg) == head_weight) > 1
    head_input = f"{head_weight}_lm_head" if tied else head_weight
    if tied:
        roles.pop(head_weight)                 # the embedding keeps the full table
    layout = []
    specs = list(graph.inputs)
    if tied:
        original = next(spec for spec in graph.inputs if spec.name == head_weight)
        specs.append(dataclasses.replace(original, name=head_input))
        roles[head_input] = ("vocab", 0)
    for spec in specs:
        full_source = spec.source
        style, dim = ("kv_cache", 1) if spec.kind == "kv_cache" else roles.get(spec.name, ("replicate", 0))
        shape = list(spec.shape)
        if style == "kv_cache":
            shape[1] = _divide(shape[1], "key/value heads", plan)
        elif style == "vocab":
            shape[dim] = -(-shape[dim] // plan.size)  # padded up: the gathered padding is sliced off
        elif style in ("colwise", "rowwise"):
            shape[dim] = _divide(shape[dim], f"features of {spec.source}", plan)
        source = f"{spec.source}:vocab_shard" if tied and spec.name == head_input else spec.source
        layout.append(_SplitInput(dataclasses.replace(spec, shape=tuple(shape), source=source), full_source,
                                  style, dim))
    return layout, head_input


def shard_graph(graph: Graph, plan: TensorParallelPlan) -> Graph:
    """The graph each of ``plan.size`` devices runs (see the module docstring)."""
    if plan.size == 1:
        return graph
    layout, head_input = _split_layout(graph, plan)
    styles = {item.spec.name: item.style for item in layout}
    head = _logits_linear(graph)
    renamed: dict[str, str] = {}
    nodes: list[Node] = []
    for node in graph.nodes:
        args = _rename(node.args, renamed)
        if node is head:
            args = [args[0], {"ref": head_input}, *args[2:]]
        nodes.append(dataclasses.replace(node, args=args, kwargs=_rename(node.kwargs, renamed)))
        if node is head:
            gathered = f"{node.name}_all_gather"
            nodes.append(Node(gathered, ALL_GATHER, [{"ref": node.name}, -1, plan.size], {}))
            vocab = next(spec.shape[0] for spec in graph.inputs if spec.name == _ref(node.args[1]))
            if vocab % plan.size:  # drop the rows added to make the vocabulary divisible
                nodes.append(Node(f"{gathered}_unpad", "aten.slice.Tensor", [{"ref": gathered}, -1, 0, vocab], {}))
                gathered = f"{gathered}_unpad"
            renamed[node.name] = gathered
        elif node.op == LINEAR and styles.get(_ref(node.args[1])) == "rowwise":
            nodes.append(Node(f"{node.name}_all_reduce", ALL_REDUCE, [{"ref": node.name}, plan.size], {}))
            renamed[node.name] = f"{node.name}_all_reduce"
    outputs = tuple(renamed.get(name, name) for name in graph.outputs)
    sharded = Graph(graph.name, tuple(item.spec for item in layout), tuple(nodes), outputs, graph.mutated_inputs,
                    {**graph.attributes, "tensor_parallel_size": plan.size})
    sharded.validate()
    return propagate_shapes(sharded)


def _rename(value, renamed: dict[str, str]):
    if isinstance(value, list):
        return [_rename(v, renamed) for v in value]
    if isinstance(value, dict):
        if "ref" in value:
            return {"ref": renamed.get(value["ref"], value["ref"])}
        return {k: _rename(v, renamed) for k, v in value.items()}
    return value


def shard_weights(graph: Graph, weights: dict[str, torch.Tensor], plan: TensorParallelPlan,
                  rank: int) -> dict[str, torch.Tensor]:
    """Rank ``rank``'s tensors for ``shard_graph(graph, plan)``, cut from the one-device ``weights``."""
    if plan.size == 1:
        return weights
    layout, _ = _split_layout(graph, plan)
    shards: dict[str, torch.Tensor] = {}
    for item in layout:
        if item.spec.kind != "weight":
            continue
        part = item.spec.shape[item.dim] if len(item.spec.shape) > item.dim else 0  # scalars are replicated
        shards[item.spec.source] = cut_shard(weights[item.full_source], item.style, item.dim, part, rank, plan.size)
    return shards


def cut_shard(tensor: torch.Tensor, style: str, dim: int, part: int, rank: int, size: int) -> torch.Tensor:
    """Rank ``rank``'s piece of a one-device weight (``part``: its extent along ``dim`` on each rank).

    ``replicate``: the tensor; ``rowwise_bias``: the tensor on rank 0, zeros elsewhere (added once,
    after the all-reduce); ``colwise`` / ``rowwise`` / ``vocab``: a slice along ``dim``, the
    vocabulary padded with zero rows up to ``part * size`` first.
    """
    if style == "replicate":
        return tensor
    if style == "rowwise_bias":
        return tensor if rank == 0 else torch.zeros_like(tensor)
    if style == "vocab" and part * size != tensor.shape[0]:
        tensor = torch.cat([tensor, tensor.new_zeros(part * size - tensor.shape[0], *tensor.shape[1:])])
    return tensor.narrow(dim, rank * part, part).contiguous().clone()
