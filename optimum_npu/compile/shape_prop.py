"""Recompute the static shapes stored in a graph's nodes by running it on fake tensors (no data)."""

from __future__ import annotations

import dataclasses

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from optimum_npu.device.executor import Program  # compile may use the device's interpreter (layers table)
from optimum_npu.schema import Graph, GraphFormatError, dtype_from_name, dtype_name


def propagate_shapes(graph: Graph) -> Graph:
    """A copy of ``graph`` whose node ``meta`` (shape, dtype) matches its current inputs."""
    program = Program(graph, kernels={})
    with FakeTensorMode(), torch.no_grad():
        inputs = [torch.empty(spec.shape, dtype=dtype_from_name(spec.dtype)) for spec in graph.inputs]
        values = program.values(*inputs)
    nodes = [dataclasses.replace(node, meta=_meta(values[node.name])) for node in graph.nodes]
    return dataclasses.replace(graph, nodes=tuple(nodes))


def _meta(value) -> dict:
    if isinstance(value, torch.Tensor):
        return {"shape": list(value.shape), "dtype": dtype_name(value.dtype)}
    if isinstance(value, (list, tuple)):
        return {"tuple": [_meta(v) for v in value]}
    return {}


def verify_shapes(graph: Graph) -> None:
    """Refuses a graph whose stored node shapes are not what its operators compute.

    The cost model, the workspace reservation and the memory report read the stored shapes;
    running the graph on fake tensors (no data, no allocation) proves them, so a graph cannot
    allocate more at run time than the device reserved for it at load.
    """
    try:
        computed = propagate_shapes(graph)
    except Exception as err:  # noqa: BLE001 - any failure of an untrusted graph is a format error
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise GraphFormatError(f"graph {graph.name!r} cannot run on its own inputs ({first[:300]}); the artifact "
                               "is damaged or was not written by optimum-npu: re-download or recompile it") from None
    for stored, node in zip(graph.nodes, computed.nodes):
        declared = {k: v for k, v in stored.meta.items() if k != "placement"}
        if declared != node.meta:
            raise GraphFormatError(f"graph {graph.name!r}: node {stored.name!r} ({stored.op}) declares {declared} but "
                                   f"computes {node.meta}; the artifact is damaged or was not written by optimum-npu: "
                                   "re-download or recompile it")
