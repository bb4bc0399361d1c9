"""The quantization pass for routed experts: the stacked weights an ``npu.moe`` node reads become quantized values
plus scales, passed as its ``gate_up_scale`` / ``down_scale``.

Each expert's ``gate_up`` [2I, H] and ``down`` [H, I] is a linear weight [out, in], quantized like one
(``kernels/quantized_linear.quantize_weight``: int8 / int4 with a scale per ``group_size`` input features,
fp8 with one per output channel), expert by expert: values [E, out, in] (int4: [E, out, in / 2]) and scales
[E, out, in / G], written once as ``<weight>.qweight`` / ``<weight>.weight_scale`` however many graphs read them.
A weight read through a transposed view (gpt-oss stores [E, H, 2I] / [E, I, H]) is quantized in the [out, in]
layout the kernel reads, and the view goes. The expert biases are not touched, the shared expert is a linear
(quantized by ``quantize.py``), and the router stays in the model's dtype (``router_weights``: its top-k is a
discontinuous choice a rounding can flip; gpt-oss's own MXFP4 checkpoint keeps its router unquantized too).
"""

from __future__ import annotations

import dataclasses

import torch

from optimum_npu.compile.quantization_config import QuantizationConfig
from optimum_npu.device.kernels import MOE
from optimum_npu.device.kernels.quantized_linear import quantize_weight
from optimum_npu.device.ops import argument
from optimum_npu.schema import Graph, Node, TensorSpec, dtype_name, ref_name
from optimum_npu.schema_ops import ALLOWED_OPS

#: The weights of an ``npu.moe`` node that are quantized, and the argument taking each one's scales.
EXPERT_WEIGHTS = {"gate_up": "gate_up_scale", "down": "down_scale"}
_TRANSPOSE = "aten.transpose.int"
#: Suffixes of the quantized tensors' names (``<module>.qweight``, ``<module>.weight_scale``), shared with the
#: linears' pass (``quantize.py``).
QWEIGHT, SCALE = ".qweight", ".weight_scale"


def router_weights(graph: Graph) -> set[str]:
    """Sources of the weights of the linears computing an ``npu.moe`` node's router logits (left unquantized)."""
    producers = {node.name: node for node in graph.nodes}
    sources = {spec.name: spec.source for spec in graph.inputs}
    found = set()
    for node in graph.nodes:
        if node.op == MOE:
            router = producers.get(ref_name(argument(node, "router_logits")))
            if router is not None and router.op == "aten.linear.default":
                found.add(sources.get(ref_name(router.args[1])))
    return found - {None}


def quantize_stacked(weight: torch.Tensor, fmt: str, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """weight [E, N, K] -> values [E, N, K] (int4: [E, N, K / 2]) and scales [E, N, K / G], expert by expert
    (every row is quantized on its own, so one call over [E * N, K] is the same)."""
    experts, rows, features = weight.shape
    values, scale = quantize_weight(weight.reshape(experts * rows, features), fmt, group_size)
    return values.reshape(experts, rows, -1), scale.reshape(experts, rows, -1)


def _with_argument(node: Node, name: str, value) -> Node:
    """``node`` with its schema argument ``name`` set (in place of a positional one, else as a keyword)."""
    position = ALLOWED_OPS[node.op].index(name)
    if position < len(node.args):
        args = list(node.args)
        args[position] = value
        return dataclasses.replace(node, args=args)
    return dataclasses.replace(node, kwargs={**node.kwargs, name: value})


def quantize_expert_graph(graph: Graph, weights: dict[str, torch.Tensor], config: QuantizationConfig,
                          done: dict[str, tuple[str, str]]) -> Graph:
    """``graph`` with the expert weights of its ``npu.moe`` nodes quantized (``done``: full-precision source ->
    (values source, scales source), shared by the graphs of one model; ``weights`` gains the new tensors)."""
    specs = {spec.name: spec for spec in graph.inputs}
    views = {node.name: ref_name(node.args[0]) for node in graph.nodes
             if node.op == _TRANSPOSE and list(node.args[1:]) in ([1, 2], [2, 1], [-1, -2], [-2, -1])}
    new_inputs: dict[str, TensorSpec] = {}
    nodes = []
    for node in graph.nodes:
        if node.op != MOE:
            nodes.append(node)
            continue
        for name, scale_name in EXPERT_WEIGHTS.items():
            ref = ref_name(argument(node, name))
            stored = ref if ref in specs else views.get(ref)
            if stored not in specs or specs[stored].kind != "weight":
                continue
            spec = specs[stored]
            if spec.source not in done:
                tensor = weights[spec.source]
                tensor = tensor.transpose(1, 2) if ref != stored else tensor            # [E, out, in]
                config.check_in_features({f"experts {spec.source} (weight {list(tensor.shape)})": tensor.shape[2]})
                values, scale = quantize_stacked(tensor.detach(), config.weights, config.group_size)
                weights[spec.source + QWEIGHT], weights[spec.source + SCALE] = values, scale
                done[spec.source] = (spec.source + QWEIGHT, spec.source + SCALE)
            for suffix, source in zip(("_q", "_scale"), done[spec.source]):
                tensor = weights[source]
                new_inputs[spec.name + suffix] = TensorSpec(spec.name + suffix, "weight", tuple(tensor.shape),
                                                            dtype_name(tensor.dtype), source)
            node = _with_argument(node, name, {"ref": spec.name + "_q"})
            node = _with_argument(node, scale_name, {"ref": spec.name + "_scale"})
        nodes.append(node)
    if not new_inputs:
        return graph
    inputs = list(graph.inputs) + [spec for name, spec in new_inputs.items() if name not in specs]
    return dataclasses.replace(graph, inputs=tuple(inputs), nodes=tuple(nodes))
