"""Turns a stored graph into an executable program for the simulated device.

Each node's operator name is resolved against the allow-listed namespaces and the graph
is rebuilt as a ``torch.fx`` graph, whose generated Python calls the ATen kernels (the
device's arithmetic units) with little interpreter overhead. Only names from the graph
file and registered operators are used: no code from the artifact is ever executed.
"""

from __future__ import annotations

import math
import operator
from typing import Callable

import torch
import torch.fx

from optimum_npu.device.kernels import KERNELS
from optimum_npu.device.cost import FREE_OPS
from optimum_npu.schema import Graph, GraphFormatError, check_op_name, decode_arg, dtype_from_name, iter_refs


def resolve_op(name: str, kernels: dict[str, Callable] | None = None) -> Callable:
    """``aten.mm.default`` -> ``torch.ops.aten.mm.default`` (allow-listed namespaces only).

    ``kernels`` maps op names to implementations that replace the registered operator
    (the device's direct kernels, or a rank's collectives).
    """
    check_op_name(name)
    if name == "getitem":
        return operator.getitem
    if kernels and name in kernels:
        return kernels[name]
    namespace, op, overload = name.split(".")
    try:
        return getattr(getattr(getattr(torch.ops, namespace), op), overload)
    except (AttributeError, RuntimeError):
        raise GraphFormatError(
            f"operator {name!r} is not available in this torch build; the artifact was compiled with another "
            "torch version: recompile it with `optimum-npu export`"
        ) from None


#: Ops that change nothing when their output dtype equals their input's (HF norms cast fp32 to fp32).
_CASTS = {"aten.to.dtype", "aten.to.device", "aten._to_copy.default", "aten.to.dtype_layout"}
_ASSERTS = {"aten._assert_tensor_metadata.default"}


def value_dtypes(graph: Graph) -> dict[str, str]:
    """The dtype of every graph value (inputs and single-tensor nodes)."""
    dtypes = {spec.name: spec.dtype for spec in graph.inputs}
    dtypes.update({node.name: node.meta["dtype"] for node in graph.nodes if "dtype" in node.meta})
    return dtypes


def _no_op_source(node, dtypes: dict[str, str]) -> str | None:
    """The value a no-op node forwards unchanged (a same-dtype cast on the one CPU-backed device)."""
    if node.op not in _CASTS or not node.args or not isinstance(node.args[0], dict):
        return None
    source = node.args[0].get("ref")
    dtype = node.meta.get("dtype")
    if source is None or dtype is None or dtypes.get(source) != dtype or node.kwargs.get("memory_format"):
        return None
    return source


def build_module(name: str, input_names: list[str], nodes, output_names: list[str],
                 kernels: dict[str, Callable], dtypes: dict[str, str] | None = None
                 ) -> tuple[torch.fx.GraphModule, list[str]]:
    """An fx module computing ``nodes`` from ``input_names``; returns it and each node's fx name.

    With ``dtypes`` (see ``value_dtypes``), metadata asserts and same-dtype casts are not
    executed (they forward their input): the arithmetic is unchanged, the dispatch is saved.
    """
    fx_graph = torch.fx.Graph()
    env: dict[str, torch.fx.Node] = {}
    for input_name in input_names:
        env[input_name] = fx_graph.placeholder(input_name)
    for node in nodes:
        if dtypes is not None and node.op in _ASSERTS and node.name not in output_names:
            continue
        source = _no_op_source(node, dtypes) if dtypes is not None else None
        if source is not None and source in env:
            env[node.name] = env[source]
            continue
        args = decode_arg(node.args, env.__getitem__)
        kwargs = {k: decode_arg(v, env.__getitem__) for k, v in node.kwargs.items()}
        env[node.name] = fx_graph.call_function(resolve_op(node.op, kernels), tuple(args), kwargs)
    outputs = [env[output] for output in output_names]
    fx_graph.output(outputs[0] if len(outputs) == 1 else tuple(outputs))
    module = torch.fx.GraphModule(torch.nn.Module(), fx_graph, class_name=f"npu_{name}")
    return module, [env[node.name].name if node.name in env else "" for node in nodes]


class Program:
    """An executable graph: ``program(*tensors)`` with tensors in ``graph.inputs`` order.

    ``kernels`` overrides operators by name (default: the device's direct kernels); pass
    ``{}`` to go through the dispatcher, e.g. to propagate shapes with ``meta`` tensors.
    """

    def __init__(self, graph: Graph, kernels: dict[str, Callable] | None = None):
        kernels = KERNELS if kernels is None else kernels
        self.graph = graph
        # shape propagation (kernels={}) keeps every node; execution skips the no-ops
        dtypes = value_dtypes(graph) if kernels else None
        self.module, self.node_names = build_module(graph.name, [spec.name for spec in graph.inputs], graph.nodes,
                                                    list(graph.outputs), kernels, dtypes)

    def __call__(self, *tensors: torch.Tensor):
        with torch.no_grad():
            return self.module(*tensors)


def peak_activation_bytes(graph: Graph) -> int:
    """Workspace a graph needs: the largest total size of intermediates alive at once."""
    last_use: dict[str, int] = {}
    for index, node in enumerate(graph.nodes):
        for ref in iter_refs(node.args) + iter_refs(node.kwargs):
            last_use[ref] = index
    for name in graph.outputs:
        last_use[name] = len(graph.nodes)
    live: dict[str, int] = {}
    peak = 0
    for index, node in enumerate(graph.nodes):
        if "shape" in node.meta and node.op not in FREE_OPS:
            live[node.name] = math.prod(node.meta["shape"]) * dtype_from_name(node.meta["dtype"]).itemsize
        peak = max(peak, sum(live.values()))
        for name in [n for n in live if last_use.get(n, -1) <= index]:
            del live[name]
    return peak

