"""Sibling linears merged into one product on the host: a layer's query, key and value projections; a gated
MLP's gate and up projections.

Linears that read the same input multiply the same rows by different weights. In a decode step each
product streams its weight and pays the BLAS's per-call cost; one product over the weights
concatenated ``[sum(out), in]`` streams the same bytes in one call. Measured on the development CPU
(one thread, packed weights, the 76M benchmark model's 12 layers in sequence, cold in cache;
``docs/benchmarks.md``): at 4 rows 23.1 ms as 84 products, 19.9 ms as 48; at 1 row 22.3 / 21.3 ms; at
86 rows (a prefill chunk) 136.8 / 135.4 ms.

What merges: in a graph, the linears that read one value, whose weights are packed
(``packed_linear``: fp32 matrices every graph reads only as linear weights), all with or all without
a bias (a 1-D fp32 weight input of their width). A set of weights merges only when every graph reads
them as that same set, so each weight is held in one packed form. Each member's value is a view of its
columns of the merged output, or a contiguous copy where a ``view`` of the graph (or the caller of a
graph output) could not read strided columns. Host-only, like packing: the cost model costs the
graph's own nodes, and the results differ from separate products by rounding at most (about 1e-6
relative in fp32). ``OPTIMUM_NPU_MERGED_LINEAR=0`` keeps the products separate (an A/B switch).
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass

import torch

from optimum_npu.device.executor import HostNode, resolve_op
from optimum_npu.device.kernels.linear import linear_kernel
from optimum_npu.device.kernels.packed_linear import pack_matrix
from optimum_npu.device.ops import GraphIndex, argument
from optimum_npu.schema import Graph, GraphFormatError, Node, TensorSpec, decode_arg, iter_refs, ref_name

#: Environment variable: ``0`` / ``false`` / ``off`` / ``no`` keeps sibling linears as separate products.
MERGED_LINEAR_ENV = "OPTIMUM_NPU_MERGED_LINEAR"
_LINEAR = "aten.linear.default"
#: Ops whose result may share the input's memory (so a ``view`` after them still sees its strides); tried on meta.
_VIEW_OPS = {"aten.view.default", "aten.reshape.default", "aten.transpose.int", "aten.permute.default",
             "aten.unsqueeze.default", "aten.squeeze.dim", "aten.slice.Tensor", "aten.select.int",
             "aten.expand.default", "aten.alias.default", "aten.flatten.using_ints", "aten.to.dtype", "aten.to.device",
             "aten.to.dtype_layout"}
#: View ops with several results: a member read by one is copied contiguous.
_MULTI_VIEW_OPS = {"aten.split.Tensor", "aten.split_with_sizes.default", "aten.chunk.default", "aten.unbind.int"}
_MAX_VIEW_CHAIN = 16

#: A merge's identity: its weight sources and bias sources (None: no biases), in member order.
MergeKey = tuple[tuple[str, ...], "tuple[str, ...] | None"]


def merging_enabled() -> bool:
    """Whether new engines merge sibling linears (``OPTIMUM_NPU_MERGED_LINEAR``, default on)."""
    return os.environ.get(MERGED_LINEAR_ENV, "1").strip().lower() not in ("0", "false", "off", "no")


@dataclass(frozen=True)
class SiblingGroup:
    """Linear nodes of one graph that read the same input, in graph order, with their weights' sources."""

    input: str
    members: tuple[str, ...]
    weights: tuple[str, ...]
    biases: tuple[str, ...] | None
    widths: tuple[int, ...]

    @property
    def key(self) -> MergeKey:
        return self.weights, self.biases


class LinearMerging:
    """Which sibling linears of an engine's graphs merge, found once; ``pack`` makes a rank's merged weights.

    Args:
        graphs: the engine's graphs by name.
        sources: the weight sources bound packed (``LinearPacking.sources``): only those merge.
    """

    def __init__(self, graphs: dict[str, Graph], sources: set[str]):
        found = {graph.name: _sibling_groups(graph, sources) for graph in graphs.values()}
        keys_of: dict[str, set] = defaultdict(set)     # weight source -> the merges (None: alone) reading it
        for _, reads in found.values():
            for source, keys in reads.items():
                keys_of[source] |= keys
        accepted = {group.key for groups, _ in found.values() for group in groups
                    if all(keys_of[source] == {group.key} for source in group.weights)}
        #: per graph name, its groups that merge
        self.groups = {name: [g for g in groups if g.key in accepted] for name, (groups, _) in found.items()}
        #: the weight sources read through a merged product only
        self.sources = {source for weights, _ in accepted for source in weights}

    def pack(self, weights: dict[str, torch.Tensor]) -> dict[MergeKey, tuple[torch.Tensor, torch.Tensor | None]]:
        """A rank's merged weights: per merge, the packed concatenation and the concatenated bias (or None).
        A merge whose tensors this rank does not hold as its graphs declare them is left out."""
        merged: dict[MergeKey, tuple[torch.Tensor, torch.Tensor | None]] = {}
        for groups in self.groups.values():
            for group in groups:
                if group.key in merged:
                    continue
                tensors = [weights.get(source) for source in group.weights]
                biases = [weights.get(source) for source in group.biases or ()]
                if not all(_fits(t, (width, None)) for t, width in zip(tensors, group.widths)) or \
                        len({t.shape[1] for t in tensors}) != 1 or \
                        not all(_fits(b, (width,)) for b, width in zip(biases, group.widths)):
                    continue
                merged[group.key] = (pack_matrix(torch.cat(tensors)), torch.cat(biases) if biases else None)
        return merged

    def rewrites(self, graph: Graph, merged: dict[MergeKey, tuple]) -> dict[str, list[HostNode]]:
        """The host steps replacing ``graph``'s merged linears (``NodeProgram``'s ``rewrites``)."""
        index = GraphIndex(graph)
        rewrites: dict[str, list[HostNode]] = {}
        for group in self.groups.get(graph.name, ()):
            if group.key not in merged:
                continue
            weight, bias = merged[group.key]
            product = f"{group.members[0]}.merged"
            steps = [HostNode(product, "host.merged_linear", linear_kernel, [{"ref": group.input}, weight, bias])]
            start, total = 0, sum(group.widths)
            for member, width in zip(group.members, group.widths):
                strided = _strided_columns_read(index, index.nodes[member], total)
                steps.append(HostNode(member, "host.linear_columns", columns if strided else contiguous_columns,
                                       [{"ref": product}, start, width]))
                start += width
            rewrites[group.members[0]] = steps
            rewrites.update({member: [] for member in group.members[1:]})
        return rewrites


def columns(y: torch.Tensor, start: int, width: int) -> torch.Tensor:
    """Columns ``start:start+width`` of a merged product y [..., total] (a view)."""
    return y.narrow(-1, start, width)


def contiguous_columns(y: torch.Tensor, start: int, width: int) -> torch.Tensor:
    """Columns ``start:start+width`` of y [..., total], copied contiguous."""
    return y.narrow(-1, start, width).contiguous()


def _fits(tensor: torch.Tensor | None, shape: tuple) -> bool:
    return tensor is not None and tensor.dtype == torch.float32 and tensor.dim() == len(shape) and \
        tensor.device.type == "cpu" and all(want is None or have == want for have, want in zip(tensor.shape, shape))


def _linear_operands(node: Node, specs: dict[str, TensorSpec]) -> tuple[str, TensorSpec, TensorSpec | None] | None:
    """(input, weight spec, bias spec or None) of a linear reading a weight input, and a bias input of its width."""
    x, weight = ref_name(argument(node, "input")), specs.get(ref_name(argument(node, "weight")) or "")
    bias_arg = argument(node, "bias")
    bias = None if bias_arg is None else specs.get(ref_name(bias_arg) or "")
    if x is None or weight is None or weight.kind != "weight" or len(weight.shape) != 2 or \
            (bias_arg is not None and (bias is None or bias.kind != "weight" or bias.dtype != "float32"
                                       or tuple(bias.shape) != tuple(weight.shape[:1]))):
        return None
    return x, weight, bias


def _sibling_groups(graph: Graph, sources: set[str]) -> tuple[list[SiblingGroup], dict[str, set]]:
    """``graph``'s groups of two or more packed linears on one input (same bias presence); and per weight
    source among ``sources``, the keys of the groups reading it (None for a linear it is read by alone)."""
    specs = {spec.name: spec for spec in graph.inputs}
    by_input: dict[tuple[str, bool], list[tuple[Node, TensorSpec, TensorSpec | None]]] = defaultdict(list)
    reads: dict[str, set] = defaultdict(set)
    for node in graph.nodes:
        if node.op != _LINEAR:
            continue
        operands = _linear_operands(node, specs)
        if operands is None or operands[1].source not in sources:
            for ref in iter_refs(node.args) + iter_refs(node.kwargs):
                if ref in specs and specs[ref].source in sources:
                    reads[specs[ref].source].add(None)
            continue
        x, weight, bias = operands
        by_input[(x, bias is not None)].append((node, weight, bias))
    groups = []
    for (x, _), found in by_input.items():
        weights = tuple(weight.source for _, weight, _ in found)
        if len(found) < 2 or len(set(weights)) != len(weights):
            for source in weights:
                reads[source].add(None)
            continue
        biases = None if found[0][2] is None else tuple(bias.source for _, _, bias in found)
        group = SiblingGroup(x, tuple(node.name for node, _, _ in found), weights, biases,
                             tuple(weight.shape[0] for _, weight, _ in found))
        groups.append(group)
        for source in weights:
            reads[source].add(group.key)
    return groups, reads


def _strided_columns_read(index: GraphIndex, member: Node, total: int) -> bool:
    """Whether every reader of ``member``'s value can take it as strided columns of a [..., total] product: it is
    not a graph output, and every ``view`` reached through view-producing ops (transpose, unsqueeze, casts that
    change nothing, ...) is possible on such columns, tried with the ops themselves on a meta tensor. Anything
    else that reads it computes a new tensor and takes any strides."""
    shape = member.meta.get("shape")
    if not isinstance(shape, list) or not shape or not all(type(d) is int and d >= 0 for d in shape):
        return False
    strided = torch.empty(*shape[:-1], total, device="meta").narrow(-1, 0, shape[-1])
    return _views_possible(index, member.name, strided, depth=0)


def _views_possible(index: GraphIndex, name: str, value: torch.Tensor, depth: int) -> bool:
    if name in index.outputs or depth > _MAX_VIEW_CHAIN:
        return False
    for user in index.consumers.get(name, ()):
        if user.op in _MULTI_VIEW_OPS:
            return False
        if user.op not in _VIEW_OPS:
            continue
        if iter_refs(user.args) + iter_refs(user.kwargs) != [name]:
            return False
        try:
            op = resolve_op(user.op, {})
            viewed = op(*decode_arg(user.args, lambda _: value),
                        **{key: decode_arg(arg, lambda _: value) for key, arg in user.kwargs.items()})
        except (RuntimeError, ValueError, TypeError, IndexError, GraphFormatError):
            return False
        if not isinstance(viewed, torch.Tensor) or not _views_possible(index, user.name, viewed, depth + 1):
            return False
    return True
