"""Recompute the static shapes stored in a graph's nodes by running it on fake tensors (no data)."""

from __future__ import annotations

import dataclasses

import torch
import torch.fx
from torch._subclasses.fake_tensor import FakeTensorMode

from optimum_npu.schema import Graph, dtype_from_name, dtype_name


def propagate_shapes(graph: Graph) -> Graph:
    """A copy of ``graph`` whose node ``meta`` (shape, dtype) matches its current inputs."""
    from optimum_npu.device.executor import Program  # the device's own graph builder, dispatcher kernels

    program = Program(graph, kernels={})
    values: dict[str, object] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, node):
            result = super().run_node(node)
            values[node.name] = result
            return result

    with FakeTensorMode(), torch.no_grad():
        inputs = [torch.empty(spec.shape, dtype=dtype_from_name(spec.dtype)) for spec in graph.inputs]
        Recorder(program.module).run(*inputs)
    nodes = []
    for node, fx_name in zip(graph.nodes, program.node_names):
        nodes.append(dataclasses.replace(node, meta=_meta(values[fx_name])))
    return dataclasses.replace(graph, nodes=tuple(nodes))


def _meta(value) -> dict:
    if isinstance(value, torch.Tensor):
        return {"shape": list(value.shape), "dtype": dtype_name(value.dtype)}
    if isinstance(value, (list, tuple)):
        return {"tuple": [_meta(v) for v in value]}
    return {}
