"""Device memory of a set of graphs, sized from the graphs alone (no weights, no execution).

This is the one sizing rule: the compiler's memory plan (``compile/pipeline.py``), the
meta-device estimate and the planner call it on the graphs they compiled, and loading an
artifact reserves what it returns for the graphs it read, so the three agree exactly.

- ``weights``: every weight input, once per distinct checkpoint tensor (``source``) however
  many graphs bind it, each at its own dtype (``weights_by_dtype``), so a graph that mixes
  dtypes (quantized weights beside bf16 norms) is sized per tensor;
- ``kv_cache``: every ``kv_cache`` input once, split into the paged pool and the
  sliding-window rings by the attention kernel that reads it (an fp8 cache's scales with it);
- ``workspace``: the largest set of intermediates alive at once in any one graph
  (``executor.peak_activation_bytes``);
- ``collective_buffers``: twice the largest collective output (a staging buffer each way),
  present only when a graph holds a collective.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch

from optimum_npu.device.executor import peak_activation_bytes
from optimum_npu.device.kernels import COLLECTIVE_OPS
from optimum_npu.device.ops import argument
from optimum_npu.schema import Graph, dtype_from_name

#: KV-cache arguments of each attention kernel, and the pool their tensors belong to.
_KV_ARGUMENTS = {"npu.paged_attention.default": (("k_cache", "v_cache", "k_scale", "v_scale"), "paged"),
                 "npu.sliding_window_attention.default": (("k_ring", "v_ring", "k_scale", "v_scale"), "sliding"),
                 # seq2seq: the encoder keys/values each sequence keeps for cross-attention, a pool of its own
                 "npu.cross_attention.default": (("k_cache", "v_cache", "mask_cache"), "cross")}


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes one device needs for a set of graphs, per category (see the module docstring).

    Attributes:
        weights_by_dtype: weight bytes per dtype name (``bfloat16``, ``float32``...).
        kv_pools: KV-cache bytes per pool (``paged``, ``sliding``; ``other`` for a cache no kernel names).
        workspace: the peak of live intermediates over the graphs.
        collective_buffers: link staging buffers (0 without collectives).
    """

    weights_by_dtype: dict[str, int] = field(default_factory=dict)
    kv_pools: dict[str, int] = field(default_factory=dict)
    workspace: int = 0
    collective_buffers: int = 0

    @property
    def weights(self) -> int:
        return sum(self.weights_by_dtype.values())

    @property
    def kv_cache(self) -> int:
        return sum(self.kv_pools.values())

    def request(self) -> dict[str, int]:
        """The per-category request a device reserves (``DeviceMemory.reserve``)."""
        request = {"weights": self.weights, "kv_cache": self.kv_cache, "workspace": self.workspace}
        if self.collective_buffers:
            request["collective_buffers"] = self.collective_buffers
        return request

    @property
    def total(self) -> int:
        return sum(self.request().values())


def collective_buffer_bytes(graph: Graph) -> int:
    """Twice the largest collective output of a graph: the staging buffers a device needs for the link."""
    sizes = [torch.Size(n.meta["shape"]).numel() * dtype_from_name(n.meta["dtype"]).itemsize
             for n in graph.nodes if n.op in COLLECTIVE_OPS and "shape" in n.meta]
    return 2 * max(sizes, default=0)


def kv_pool_of(graph: Graph) -> dict[str, str]:
    """Pool (``paged`` / ``sliding``) of each ``kv_cache`` input, from the kernel argument that reads it."""
    pools: dict[str, str] = {}
    for node in graph.nodes:
        names, pool = _KV_ARGUMENTS.get(node.op, ((), ""))
        for name in names:
            value = argument(node, name)
            if isinstance(value, dict) and "ref" in value:
                pools[value["ref"]] = pool
    return pools


def plan_graph_memory(graphs: Iterable[Graph]) -> MemoryPlan:
    """The memory one device needs to hold and run ``graphs`` (the graphs of one rank)."""
    graphs = list(graphs)
    weights: dict[str, tuple[str, int]] = {}
    caches: dict[str, tuple[str, int]] = {}
    for graph in graphs:
        pools = kv_pool_of(graph)
        for spec in graph.inputs:
            if spec.kind == "weight":
                weights.setdefault(spec.source, (spec.dtype, spec.nbytes))
            elif spec.kind == "kv_cache":
                pool = pools.get(spec.name, "other")
                caches[spec.name] = (pool, max(spec.nbytes, caches.get(spec.name, (pool, 0))[1]))
    by_dtype: dict[str, int] = {}
    for dtype, nbytes in weights.values():
        by_dtype[dtype] = by_dtype.get(dtype, 0) + nbytes
    kv_pools = {"paged": 0, "sliding": 0}
    for pool, nbytes in caches.values():
        kv_pools[pool] = kv_pools.get(pool, 0) + nbytes
    return MemoryPlan(by_dtype, kv_pools, max((peak_activation_bytes(g) for g in graphs), default=0),
                      max((collective_buffer_bytes(g) for g in graphs), default=0))
