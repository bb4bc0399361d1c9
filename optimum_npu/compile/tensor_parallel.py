"""Tensor parallelism as a compiler pass over graphs.

``shard_graph`` turns a one-device graph into the graph every device of an N-way
tensor-parallel group runs (the same graph on each rank: only the weights differ):

- column-parallel weights (q/k/v, gate/up, fc1) keep 1/N of their output features, so each
  device holds 1/N of the attention heads and of the MLP columns, and 1/N of the KV cache
  (split by key/value heads). A fused projection (Phi-3 ``qkv_proj`` / ``gate_up_proj``,
  GPT-2 ``c_attn``) is split per part: each device keeps its slice of q, of k and of v;
- row-parallel weights (o, down) keep 1/N of their input features; the linear reading them
  is followed by an ``npu.all_reduce`` that sums the partial results;
- the logits projection, found by the weight names the plan gives (``lm_head.weight``, or the
  embedding table it is tied to; an encoder's plan names none), keeps 1/N of the vocabulary (padded up to a multiple of N with
  zero rows, sliced off after gathering), followed by an ``npu.all_gather``;
- convolutions split the same way by their weight's dimensions (output channels: dim 0, input channels:
  dim 1), a row-parallel one followed by an ``npu.all_reduce``; a group norm whose weight is split
  normalises each rank's channels in groups/N groups (whole groups per rank, refused otherwise);
- everything else (embeddings, norms, position tables) is replicated;
- with ``expert_parallel`` the plan cuts the stacked expert weights along the expert dimension and each
  ``npu.moe`` node becomes dispatch / local experts / combine collectives (``compile/expert_parallel.py``).

Quantized linears (``compile/quantize.py``) split the same way: their values are laid out [out, in]
whatever the module's layout, and their scales are cut with their groups (a per-channel scale of a
row-parallel layer is replicated).

The graph itself is rank-agnostic: the decoder writes its views with per-head sizes and ``-1``,
so after the weight shapes change ``propagate_shapes`` gives every node its per-rank shape.
``shard_weights`` cuts each rank's tensors to match (``cut_shard``, also used to verify caches), from the union of
the weights an artifact's graphs bind (an encoder-decoder's encoder and decoder graphs bind different ones; the plan's
``logits_free_kinds`` names the graphs without a logits projection, ``replicated_states`` the caches without heads).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable

import torch

from optimum_npu.compile.expert_parallel import (WEIGHT_VIEWS, expert_parallel_nodes, experts_per_layer,
                                                 row_parallel_experts)
from optimum_npu.compile.quantize import quantized_split
from optimum_npu.compile.shape_prop import propagate_shapes
from optimum_npu.compile.tensor_parallel_plan import TensorParallelError, TensorParallelPlan, WeightSplit
from optimum_npu.device.kernels import MOE, QUANTIZED_LINEAR
from optimum_npu.schema import ALL_GATHER, ALL_REDUCE, Graph, Node, TensorSpec, ref_name

LINEAR = "aten.linear.default"
#: Convolutions (input, weight [C_out, C_in / groups, k...], bias, stride, padding, dilation, groups).
CONVOLUTIONS = ("aten.conv1d.default", "aten.conv2d.default")
GROUP_NORM = "aten.group_norm.default"   # (input, num_groups, weight, bias, eps, cudnn_enabled)
#: Ops whose weight may be split and the position of their bias argument (a quantized linear reads weight and
#: scale first); a convolution's weight splits by the same dimensions as a linear's.
_BIAS_POSITION = {LINEAR: 2, QUANTIZED_LINEAR: 3, **{conv: 2 for conv in CONVOLUTIONS}}
#: Ops through which a weight may reach a linear (a ``Conv1D`` weight [in, out] is transposed) or the experts.
_WEIGHT_VIEWS = WEIGHT_VIEWS


def _linear_weights(graph: Graph) -> list[tuple[Node, str | None, str | None]]:
    """(linear or convolution node, weight input name, bias input name), a weight read through a transpose
    included."""
    inputs = {spec.name for spec in graph.inputs}
    views = {node.name: ref_name(node.args[0]) for node in graph.nodes if node.op in _WEIGHT_VIEWS}
    found = []
    for node in graph.nodes:
        if node.op in _BIAS_POSITION:
            position = _BIAS_POSITION[node.op]
            weight, bias = ref_name(node.args[1]), ref_name(node.args[position]) if len(node.args) > position else None
            weight = weight if weight in inputs else views.get(weight)
            found.append((node, weight if weight in inputs else None, bias if bias in inputs else None))
    return found


def _logits_linear(graph: Graph, plan: TensorParallelPlan) -> tuple[Node | None, str | None, str | None]:
    """The linear reading the plan's logits weight: the projection to the vocabulary (none when the plan names no
    logits weight: an encoder's heads are replicated)."""
    if not plan.logits or graph.attributes.get("kind") in plan.logits_free_kinds:
        return None, None, None
    sources = {spec.name: spec.source for spec in graph.inputs}
    heads = [item for item in _linear_weights(graph) if sources.get(item[1]) in plan.logits]
    if len(heads) != 1:
        raise TensorParallelError(f"graph {graph.name!r} has {len(heads)} linear layers reading the logits weight "
                                  f"{' / '.join(plan.logits)} (expected one); the adapter's lm_head path is wrong")
    return heads[0]


def _divide(extent: int, what: str, plan: TensorParallelPlan) -> int:
    if extent % plan.size:
        divisors = [d for d in range(1, min(extent, 64) + 1) if extent % d == 0]
        raise TensorParallelError(
            f"tensor_parallel_size={plan.size} does not divide the {extent} {what}; choose a "
            f"tensor_parallel_size among {divisors}"
        )
    return extent // plan.size


@dataclass(frozen=True)
class Cut:
    """How one rank's tensor is cut from the full one (the arguments of ``cut_shard``)."""

    style: str                # replicate / colwise / rowwise / rowwise_bias / vocab / kv_cache
    dim: int = 0
    parts: tuple[int, ...] = ()


def weight_cut(split: WeightSplit | None, source: str, shape: tuple[int, ...]) -> Cut:
    """The cut of a weight (2-D) or bias (1-D) named ``source`` under ``split``."""
    if split is None or split.style == "replicate" or len(shape) == 0:
        return Cut("replicate")
    if split.style == "rowwise_bias":
        return Cut("rowwise_bias")
    if split.style == "rowwise":
        if len(shape) == 1:
            return Cut("rowwise_bias")
        return Cut("rowwise", 1 - split.out_dim if split.in_dim is None else split.in_dim)
    dim = 0 if len(shape) == 1 else split.out_dim
    parts = split.parts or (shape[dim],)
    if sum(parts) != shape[dim]:
        raise TensorParallelError(f"{source} has {shape[dim]} output features but its plan declares parts "
                                  f"{list(parts)}; fix the architecture adapter's tp_plan")
    return Cut("colwise", dim, parts)


@dataclass(frozen=True)
class _SplitInput:
    spec: TensorSpec          # the input of the sharded graph
    full_source: str | None   # the one-device tensor it is cut from
    cut: Cut


def _split_layout(graph: Graph, plan: TensorParallelPlan):
    """Inputs of the sharded graph and the names of the logits projection's weight and bias inputs."""
    head, head_weight, head_bias = _logits_linear(graph, plan)
    tied = head is not None and sum(1 for node in graph.nodes for arg in node.args if ref_name(arg) == head_weight) > 1
    head_input = f"{head_weight}_lm_head" if tied else head_weight
    specs = list(graph.inputs)
    if tied:  # the embedding keeps the full table; the logits projection reads a vocabulary shard of it
        original = next(spec for spec in graph.inputs if spec.name == head_weight)
        specs.append(dataclasses.replace(original, name=head_input, source=f"{original.source}:vocab_shard"))
    layout = []
    for spec in specs:
        full_source = spec.source.removesuffix(":vocab_shard") if spec.source else spec.source
        if spec.kind == "kv_cache":
            cut = Cut("replicate") if spec.name in plan.replicated_states else Cut("kv_cache", 1)
        elif spec.name in (head_input, head_bias):
            cut = Cut("vocab", 0)
        elif spec.kind == "weight":
            cut = weight_cut(quantized_split(plan.split_of(spec.source), spec.source, spec.shape), spec.source,
                             spec.shape)
        else:
            cut = Cut("replicate")
        shape = list(spec.shape)
        if cut.style == "kv_cache":
            shape[1] = _divide(shape[1], "key/value heads", plan)
        elif cut.style == "vocab":
            shape[0] = -(-shape[0] // plan.size)  # padded up: the gathered padding is sliced off
        elif cut.style == "rowwise":
            shape[cut.dim] = _divide(shape[cut.dim], f"input features of {spec.source}", plan)
        elif cut.style == "colwise":
            what = "output features of {}" + (" (part {} of the fused projection)" if len(cut.parts) > 1 else "")
            shape[cut.dim] = sum(_divide(p, what.format(spec.source, i), plan) for i, p in enumerate(cut.parts))
        layout.append(_SplitInput(dataclasses.replace(spec, shape=tuple(shape)), full_source, cut))
    return layout, head, head_input


def shard_graph(graph: Graph, plan: TensorParallelPlan) -> Graph:
    """The graph each of ``plan.size`` devices runs (see the module docstring)."""
    if plan.size == 1:
        return graph
    layout, head, head_input = _split_layout(graph, plan)
    cuts = {item.spec.name: item.cut.style for item in layout}
    products = _linear_weights(graph)
    _refuse_grouped_convolutions(products, cuts)
    rowwise = {node.name for node, weight, _ in products if cuts.get(weight) == "rowwise"}
    rowwise |= row_parallel_experts(graph, cuts)
    sources = {item.spec.name: item.full_source for item in layout}
    renamed: dict[str, str] = {}
    nodes: list[Node] = []
    for node in graph.nodes:
        args = _rename(node.args, renamed)
        if node is head:
            args = [args[0], {"ref": head_input}, *args[2:]]
        norm_weight = ref_name(node.args[2]) if node.op == GROUP_NORM else None
        if norm_weight is not None and cuts.get(norm_weight) == "colwise":   # each rank: its channels' groups
            args[1] = _divide(node.args[1], f"groups of the group norm reading {sources[norm_weight]} (whole "
                              "groups per device)", plan)
        if node.op == MOE and plan.expert_parallel:
            experts = experts_per_layer(graph, node)
            nodes += expert_parallel_nodes(dataclasses.replace(node, args=args), plan.size, experts)
            renamed[node.name] = nodes[-1].name
            continue
        nodes.append(dataclasses.replace(node, args=args, kwargs=_rename(node.kwargs, renamed)))
        if node is head:
            gathered = f"{node.name}_all_gather"
            nodes.append(Node(gathered, ALL_GATHER, [{"ref": node.name}, -1, plan.size], {}))
            vocab = next(spec.shape[0] for spec in graph.inputs if spec.name == ref_name(node.args[1]))
            if vocab % plan.size:  # drop the rows added to make the vocabulary divisible
                nodes.append(Node(f"{gathered}_unpad", "aten.slice.Tensor", [{"ref": gathered}, -1, 0, vocab], {}))
                gathered = f"{gathered}_unpad"
            renamed[node.name] = gathered
        elif node.name in rowwise:
            nodes.append(Node(f"{node.name}_all_reduce", ALL_REDUCE, [{"ref": node.name}, plan.size], {}))
            renamed[node.name] = f"{node.name}_all_reduce"
    outputs = tuple(renamed.get(name, name) for name in graph.outputs)
    sharded = Graph(graph.name, tuple(item.spec for item in layout), tuple(nodes), outputs, graph.mutated_inputs,
                    {**graph.attributes, "tensor_parallel_size": plan.size})
    sharded.validate()
    return propagate_shapes(sharded)


def _refuse_grouped_convolutions(products: list[tuple[Node, str | None, str | None]], cuts: dict[str, str]) -> None:
    """A grouped (depthwise) convolution mixes no channels across groups; splitting its weight is not supported."""
    for node, weight, _ in products:
        groups = node.args[6] if len(node.args) > 6 else node.kwargs.get("groups", 1)
        if node.op in CONVOLUTIONS and groups != 1 and cuts.get(weight) in ("colwise", "rowwise"):
            raise TensorParallelError(f"convolution {node.name} has groups={groups} and a split weight {weight}; only "
                                      "convolutions with groups=1 are split: replicate it in the tensor-parallel plan")


def _rename(value, renamed: dict[str, str]):
    if isinstance(value, list):
        return [_rename(v, renamed) for v in value]
    if isinstance(value, dict):
        if "ref" in value:
            return {"ref": renamed.get(value["ref"], value["ref"])}
        return {k: _rename(v, renamed) for k, v in value.items()}
    return value


def shard_weights(graphs: Iterable[Graph], weights: dict[str, torch.Tensor],
                  plan: TensorParallelPlan) -> list[dict[str, torch.Tensor]]:
    """Every rank's tensors for ``shard_graph(graph, plan)`` of every graph, cut from the one-device ``weights``.

    The graphs of one artifact may bind different weights (an encoder-decoder's encoder and decoder graphs): each
    rank's tensors are the union of what they bind, each cut once. A weight two graphs would cut differently is
    refused (``TensorParallelError``): the ranks store one tensor per weight.
    """
    if plan.size == 1:
        return [weights]
    layouts = {}
    for graph in graphs:
        for item in _split_layout(graph, plan)[0]:
            if item.spec.kind != "weight":
                continue
            seen = layouts.setdefault(item.spec.source, (graph.name, item))
            if (seen[1].cut, seen[1].spec.shape) != (item.cut, item.spec.shape):
                raise TensorParallelError(
                    f"weight {item.spec.source} is cut as {seen[1].cut.style} {list(seen[1].spec.shape)} for graph "
                    f"{seen[0]!r} but as {item.cut.style} {list(item.spec.shape)} for graph {graph.name!r}; the "
                    "tensor-parallel plan must split a weight the same way wherever it is used")
    ranks: list[dict[str, torch.Tensor]] = [{} for _ in range(plan.size)]
    for _, item in layouts.values():
        cut = item.cut
        part = item.spec.shape[cut.dim] if len(item.spec.shape) > cut.dim else 0  # scalars are replicated
        for rank, shards in enumerate(ranks):
            shards[item.spec.source] = cut_shard(weights[item.full_source], cut.style, cut.dim, part, rank,
                                                 plan.size, cut.parts)
    return ranks


def cut_shard(tensor: torch.Tensor, style: str, dim: int, part: int, rank: int, size: int,
              parts: tuple[int, ...] = ()) -> torch.Tensor:
    """Rank ``rank``'s piece of a one-device weight (``part``: its extent along ``dim`` on each rank).

    ``replicate``: the tensor; ``rowwise_bias``: the tensor on rank 0, zeros elsewhere (added once,
    after the all-reduce); ``colwise`` / ``rowwise`` / ``vocab``: a slice along ``dim``, the
    vocabulary padded with zero rows up to ``part * size`` first. ``parts`` (colwise): the full
    extents of a fused projection's parts; the rank keeps its slice of each part, concatenated.
    """
    if style == "replicate":
        return tensor
    if style == "rowwise_bias":
        return tensor if rank == 0 else torch.zeros_like(tensor)
    if style == "colwise" and len(parts) > 1:
        return torch.cat([piece.narrow(dim, rank * (p // size), p // size)
                          for piece, p in zip(tensor.split(list(parts), dim), parts)], dim).contiguous().clone()
    if style == "vocab" and part * size != tensor.shape[0]:
        tensor = torch.cat([tensor, tensor.new_zeros(part * size - tensor.shape[0], *tensor.shape[1:])])
    return tensor.narrow(dim, rank * part, part).contiguous().clone()
