"""The quantization pass: linear weights become quantized tensors + scales, linears become ``npu.quantized_linear``.

For every ``aten.linear`` whose weight is a graph weight (read directly, or through a transpose for
GPT-2's ``Conv1D`` [in, out] weights) the pass

- quantizes the weight once, however many graphs read it (``device/kernels/quantized_linear.py``:
  round-to-nearest, symmetric), into ``<module>.qweight`` (int8 / packed int4 / fp8, laid out
  [out, in]) and ``<module>.weight_scale``;
- replaces the node by ``npu.quantized_linear(input, qweight, scale, bias)`` under the same name (the
  tensor-parallel pass and the fusion candidates find it by name), and drops the full-precision weight
  and the views of it that nothing reads any more.

The routed experts' stacked weights read by ``npu.moe`` are quantized the same way, expert by expert
(``quantize_experts.py``). Weights read by anything but linears and experts (an embedding table), and the
``keep`` weights (the logits projection), stay as they are. The KV cache is quantized by the attention kernels (``kv_cache``
knob), not here. On a ``meta`` capture the same code yields the quantized shapes without data.
"""

from __future__ import annotations

import dataclasses

import torch

from optimum_npu.compile.quantization_config import QuantizationConfig, QuantizationConfigError
from optimum_npu.compile.quantize_experts import QWEIGHT, SCALE, quantize_expert_graph, router_weights
from optimum_npu.device.kernels import QUANTIZED_LINEAR
from optimum_npu.device.kernels.quantized_linear import quantize_weight
from optimum_npu.device.ops import FREE_OPS
from optimum_npu.schema import Graph, Node, TensorSpec, dtype_name, iter_refs, ref_name

LINEAR = "aten.linear.default"
#: Views through which a linear may read its weight (``Conv1D``: ``linear(x, w.t())``).
_TRANSPOSES = ("aten.t.default", "aten.transpose.int", "aten.permute.default")


def is_quantized_source(source: str | None) -> bool:
    """Whether a weight name is a tensor written by this pass."""
    return bool(source) and (source.endswith(QWEIGHT) or source.endswith(SCALE))


def quantized_split(split, source: str | None, shape: tuple[int, ...]):
    """The tensor-parallel split (``WeightSplit``) of a weight, adjusted for the tensors this pass writes: their
    values and scales are [out, in] (``out_dim`` 0; stacked experts [E, out, in]), and a per-channel scale [N, 1]
    of a row-parallel layer is the same on every rank (None: replicated). Other weights keep their split."""
    if split is None or not is_quantized_source(source):
        return split
    if source.endswith(SCALE) and split.style == "rowwise" and shape[-1] == 1:
        return None
    if len(shape) == 3:  # stacked experts, [E, out, in] once quantized: spread by expert, or split by features
        return split if split.style == "colwise" and split.out_dim == 0 else dataclasses.replace(split, out_dim=1,
                                                                                                 in_dim=2)
    return dataclasses.replace(split, out_dim=0)


@dataclasses.dataclass(frozen=True)
class _Target:
    """A linear to rewrite: the node, its weight input, and whether the weight is read transposed ([in, out])."""

    node: Node
    weight_input: str
    transposed: bool


def _targets(graph: Graph, keep: tuple[str, ...]) -> list[_Target]:
    weights = {spec.name: spec for spec in graph.inputs if spec.kind == "weight"}
    views = {node.name: ref_name(node.args[0]) for node in graph.nodes if node.op in _TRANSPOSES}
    readers: dict[str, set[str]] = {}  # weight input -> ops reading it (through its views)
    for node in graph.nodes:
        for ref in iter_refs(node.args) + iter_refs(node.kwargs):
            weight = ref if ref in weights else views.get(ref)
            if weight in weights and not (node.op in _TRANSPOSES and ref == weight):
                readers.setdefault(weight, set()).add(node.op)
    found = []
    for node in graph.nodes:
        if node.op != LINEAR:
            continue
        ref = ref_name(node.args[1])
        weight = ref if ref in weights else views.get(ref)
        if weight not in weights or weights[weight].source in keep or readers.get(weight) != {LINEAR}:
            continue
        if len(weights[weight].shape) != 2:
            continue
        found.append(_Target(node, weight, transposed=ref != weight))
    return found


def _layer_name(source: str) -> str:
    return source[: -len(".weight")] if source.endswith(".weight") else source


#: Tensors quantized before compiling (a pre-quantized checkpoint): weight name -> (values, scales [N, K / G]).
Prequantized = dict[str, tuple[torch.Tensor, torch.Tensor]]


def quantize_graphs(graphs: dict[str, Graph], weights: dict[str, torch.Tensor], config: QuantizationConfig | None,
                    keep: tuple[str, ...] = (), given: Prequantized | None = None
                    ) -> tuple[dict[str, Graph], dict[str, torch.Tensor]]:
    """The graphs with their linears quantized, and the weights with the quantized tensors (module docstring).

    Args:
        graphs: the captured graphs (they share weights by ``source`` name).
        weights: the tensors by source name (``meta`` tensors for an estimate).
        config: the knob; None or no ``weights`` format returns the inputs unchanged.
        keep: weight names never quantized (the logits projection; MoE routers are kept too).
        given: values and scales already quantized (a pre-quantized checkpoint): those layers take them as they
            are, and no other layer is quantized.
    Raises:
        QuantizationConfigError: a layer's input features are not a multiple of ``group_size``.
    """
    if config is None or config.weights is None:
        return graphs, weights
    weights = dict(weights)
    keep = tuple(keep) + tuple(sorted(set().union(*(router_weights(graph) for graph in graphs.values()))))
    done: dict[str, tuple[str, str]] = {}  # full-precision source -> (qweight source, scale source)
    rewritten = {}
    for name, graph in graphs.items():
        graph = _rewrite(graph, weights, config, keep, done, given)
        if given is None:  # a pre-quantized checkpoint gives linears only
            experts = quantize_expert_graph(graph, weights, config, done)
            graph = graph if experts is graph else _pruned(experts)
        rewritten[name] = graph
    used = {spec.source for graph in rewritten.values() for spec in graph.inputs if spec.kind == "weight"}
    for source in done:
        if source not in used:
            weights.pop(source, None)
    return rewritten, weights


def _rewrite(graph: Graph, weights: dict[str, torch.Tensor], config: QuantizationConfig, keep: tuple[str, ...],
             done: dict[str, tuple[str, str]], given: Prequantized | None) -> Graph:
    specs = {spec.name: spec for spec in graph.inputs}
    targets = {target.node.name: target for target in _targets(graph, keep)
               if given is None or specs[target.weight_input].source in given}
    if not targets:
        return graph
    new_inputs: dict[str, TensorSpec] = {}
    nodes = []
    for node in graph.nodes:
        target = targets.get(node.name)
        if target is None:
            nodes.append(node)
            continue
        spec = specs[target.weight_input]
        if spec.source not in done:
            done[spec.source] = _quantize_source(spec.source, weights, config, target.transposed,
                                                 given.get(spec.source) if given else None)
        qsource, scale_source = done[spec.source]
        qweight_input, scale_input = f"{spec.name}_q", f"{spec.name}_scale"
        for input_name, source in ((qweight_input, qsource), (scale_input, scale_source)):
            tensor = weights[source]
            new_inputs[input_name] = TensorSpec(input_name, "weight", tuple(tensor.shape), dtype_name(tensor.dtype),
                                                source)
        bias = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
        nodes.append(Node(node.name, QUANTIZED_LINEAR,
                          [node.args[0], {"ref": qweight_input}, {"ref": scale_input}, bias], {}, node.meta))
    inputs = list(graph.inputs) + [spec for name, spec in new_inputs.items() if name not in specs]
    return _pruned(dataclasses.replace(graph, inputs=tuple(inputs), nodes=tuple(nodes)))


def _pruned(graph: Graph) -> Graph:
    """``graph`` without the views and weight inputs nothing reads any more (the replaced full-precision weights)."""
    nodes = _without_dead_views(list(graph.nodes), set(graph.outputs))
    read = {ref for node in nodes for ref in iter_refs(node.args) + iter_refs(node.kwargs)} | set(graph.outputs)
    inputs = [spec for spec in graph.inputs if spec.kind != "weight" or spec.name in read]
    result = dataclasses.replace(graph, inputs=tuple(inputs), nodes=tuple(nodes))
    result.validate()
    return result


def _without_dead_views(nodes: list[Node], outputs: set[str]) -> list[Node]:
    """Drops views (free ops) whose value nothing reads any more (the transposes of quantized weights)."""
    while True:
        read = {ref for node in nodes for ref in iter_refs(node.args) + iter_refs(node.kwargs)} | outputs
        kept = [node for node in nodes if node.op not in FREE_OPS or node.name in read]
        if len(kept) == len(nodes):
            return nodes
        nodes = kept


def _quantize_source(source: str, weights: dict[str, torch.Tensor], config: QuantizationConfig,
                     transposed: bool, given: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[str, str]:
    """Quantizes ``weights[source]`` ([out, in], or [in, out] when ``transposed``) into two new tensors (``given``:
    the values and scales to use as they are)."""
    weight = weights[source]
    weight = weight.t() if transposed else weight
    layer = _layer_name(source)
    if given is not None:
        values, scale = given
        if values.shape != weight.shape:
            raise QuantizationConfigError(f"the quantized values of layer {layer} are {list(values.shape)} but the "
                                          f"layer's weight is {list(weight.shape)}")
    else:
        config.check_in_features({f"layer {layer} (weight {list(weight.shape)})": weight.shape[1]})
        values, scale = quantize_weight(weight.detach(), config.weights, config.group_size)
    weights[layer + QWEIGHT], weights[layer + SCALE] = values, scale
    return layer + QWEIGHT, layer + SCALE
