"""Cost model: simulated time of a graph call, per op or fused group, from static shapes only.

Per unit (op or fused group) the roofline is ``max(compute, memory)`` with
``compute = sum(flops / (peak * compute_factor))`` and ``memory = dram_bytes / (bandwidth *
bandwidth_factor)``; the factors depend on the op class and the spec (see ``calibration``).
A fused group (see ``fusion``) reads its inputs once and writes only what leaves it: its
intermediates stay in SRAM. It is fused only when they fit in ``spec.sram_bytes`` and the
fused kernel is faster. Attention depends on the query positions and is costed per call;
unfused attention writes and reads back its score matrix (no SRAM: standard attention).
Collectives are costed on the device link (ring algorithms), host fallback ops on the host
link. Nothing is executed.

A call's cost depends on the static shapes and, through attention, only on its *extent*
(``call_extent``: the new tokens and the keys each flash partition length reads), so
``call()`` computes it once per extent and returns the same figures afterwards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from optimum_npu.device.calibration import (HOST_FLOPS, efficiency, keeps_attention_scores_on_chip,
                                            prefill_attention_compute)
from optimum_npu.device.collective_cost import collective_seconds
from optimum_npu.device.conv_cost import CONV_OPS, conv_flops
from optimum_npu.device.fusion import find_groups, group_traffic
from optimum_npu.device.cross_attention_cost import CROSS_ATTENTION, cross_attention_cost
from optimum_npu.device.dense_attention_cost import DENSE_ATTENTION, dense_attention_cost, segment_attention_cost
from optimum_npu.device.ops import (ATTENTION_OPS, COLLECTIVE_OPS, FREE_OPS, GATHER_OPS, GEMV_MAX_ROWS,
                                    MATMUL_OPS, GraphIndex, argument, is_host_op, nbytes, short_name)
from optimum_npu.device.kernels import MOE, MOE_EXPERTS, SEGMENT_ATTENTION
from optimum_npu.device.moe_cost import moe_cost
from optimum_npu.device.paged_attention_cost import (SLIDING_WINDOW_ATTENTION, attention_extent, attention_tile_bytes,
                                                     paged_attention_cost)
from optimum_npu.device.matmul_cost import matmul_cost
from optimum_npu.device.spec import NPUSpec
from optimum_npu.device.timeline import (CATEGORIES, DEQUANTIZE, DEVICE_HDMA, DEVICE_SYNC, EXTERNAL_HDMA, HOST,
                                         NEURAL_DMA,
                                         NEURAL_ENGINE, TimelineEvent)
from optimum_npu.schema import Graph, Node

#: Distinct call extents remembered per graph (a bound on memory; each is a few hundred events).
MAX_CACHED_CALLS = 4096

__all__ = ["FREE_OPS", "CallCost", "GraphCostModel", "OpCost", "roofline_seconds", "collective_seconds"]


@dataclass(frozen=True)
class OpCost:
    """FLOPs and DRAM bytes of one op; ``kind`` is its op class (see ``calibration.OP_CLASSES``).

    A quantized linear also names the ``precision`` whose peak it computes at (default: the graph's compute
    dtype) and the ``dequant_flops`` of converting its weights first (``quant_cost``).
    """

    flops: float
    bytes: float
    kind: str = "gemm"
    precision: str = ""
    dequant_flops: float = 0.0


def _compute_memory(cost: OpCost, spec: NPUSpec, dtype: str) -> tuple[float, float]:
    factors = efficiency(spec.name, cost.kind)
    return ((cost.flops + cost.dequant_flops) / (spec.peak_flops_for(cost.precision or dtype) * factors.compute),
            cost.bytes / (spec.dram_bandwidth * factors.bandwidth))


def _dequant_seconds(cost: OpCost, spec: NPUSpec, dtype: str) -> float:
    """The part of ``_compute_memory``'s compute time spent dequantising weights."""
    if not cost.dequant_flops:
        return 0.0
    peak = spec.peak_flops_for(cost.precision or dtype)
    return cost.dequant_flops / (peak * efficiency(spec.name, cost.kind).compute)


def _has_tensor(node: Node, name: str) -> bool:
    value = argument(node, name)
    return isinstance(value, dict) and "ref" in value


def roofline_seconds(cost: OpCost, spec: NPUSpec, dtype: str) -> float:
    """``max(flops / (peak * compute factor), bytes / (bandwidth * bandwidth factor))`` for the op class."""
    return max(_compute_memory(cost, spec, dtype))


@dataclass(frozen=True)
class CallCost:
    """One graph call: simulated seconds (device time, its attention part), the timeline of its ops with
    the host copies, and that timeline summed per profiler category (``timeline.CATEGORIES``)."""

    seconds: float
    attention_seconds: float
    timeline: tuple[TimelineEvent, ...]
    categories: tuple[tuple[str, float], ...]


@dataclass
class _Unit:
    """One op or fused group on the timeline; attention units are completed per call."""

    name: str
    nodes: tuple[str, ...]
    compute_s: float = 0.0
    memory_s: float = 0.0
    flops: float = 0.0
    bytes: float = 0.0
    link_s: float = 0.0     # Device HDMA
    sync_s: float = 0.0     # Device Sync
    copy_s: float = 0.0     # External HDMA of a host fallback op
    host_s: float = 0.0     # Host compute of a host fallback op
    dequant_s: float = 0.0  # part of compute_s: quantized weights converted for the engine (Dequantize)
    attention: Node | None = None
    fused: bool = False

    @property
    def seconds(self) -> float:
        return max(self.compute_s, self.memory_s) + self.link_s + self.sync_s + self.copy_s + self.host_s


class GraphCostModel:
    """Static costs of a graph's ops and fused groups, plus the per-call cost of its attention ops.

    Args:
        graph: the compiled graph (its node ``meta`` holds the static shapes).
        spec: the NPU spec it runs on.
        compute_dtype: the compute dtype (selects the peak FLOP/s).
        fuse: run the fusion pass (groups still need to fit in ``spec.sram_bytes``).
        groups: fusion candidates already found by the compile pipeline's fuse pass (``fuse`` is then
            ignored); by default they are found on ``graph``.
        cache_calls: remember ``call()`` results per call extent (the figures are the same either way).
    """

    def __init__(self, graph: Graph, spec: NPUSpec, compute_dtype: str, fuse: bool = True,
                 groups: list | None = None, cache_calls: bool = True):
        self.spec = spec
        self.dtype = compute_dtype
        self.index = GraphIndex(graph)
        self._shapes = self.index.shapes
        self.attention_nodes = [n for n in graph.nodes if n.op in ATTENTION_OPS]
        self._partitions = sorted({argument(n, "partition_len", 0) for n in self.attention_nodes
                                   if n.op != SLIDING_WINDOW_ATTENTION} - {0})
        self._calls: dict | None = {} if cache_calls else None
        self.groups = list(groups) if groups is not None else find_groups(self.index) if fuse else []
        self.units = self._build_units()
        static = [u for u in self.units if u.attention is None]
        self.static_seconds = sum(u.seconds for u in static)
        self.static_flops = sum(u.flops for u in static)
        self.static_bytes = sum(u.bytes for u in static)
        self.collective_seconds = sum(u.link_s + u.sync_s for u in static)
        self.host_seconds = sum(u.copy_s + u.host_s for u in static)
        self.fused_groups = [u.name for u in self.units if u.fused]

    # ---- per-op costs -------------------------------------------------------------------------
    def _arg_shapes(self, node: Node) -> list[tuple[list[int], str]]:
        return [self._shapes[r] for r in self.index.refs(node) if r in self._shapes]

    def _arg_shape(self, node: Node, name: str) -> tuple[list[int], str]:
        """(shape, dtype) of the tensor a node takes as its schema argument ``name``."""
        return self._shapes[argument(node, name)["ref"]]

    def op_cost(self, node: Node) -> OpCost:
        """FLOPs, DRAM bytes and op class of one (non-attention) op run on its own."""
        if node.op in FREE_OPS or "shape" not in node.meta or self.index.is_free(node):
            return OpCost(0.0, 0.0, "elementwise")
        out_shape, out_dtype = node.meta["shape"], node.meta["dtype"]
        out_bytes = nbytes(out_shape, out_dtype)
        args = self._arg_shapes(node)
        if node.op == SEGMENT_ATTENTION:  # flash-style: the score tiles stay on chip (dense_attention_cost)
            return OpCost(*segment_attention_cost(node, self._arg_shape))
        if node.op in CONV_OPS:   # 1-D and 2-D convolutions: an implicit GEMM (conv_cost)
            flops = conv_flops(out_shape, self._arg_shape(node, "weight")[0])
            return OpCost(flops, sum(nbytes(s, d) for s, d in args) + out_bytes, "gemm")
        if node.op == DENSE_ATTENTION:  # non-causal attention over a static bucket (image models)
            return OpCost(*dense_attention_cost(node, self._arg_shape, _has_tensor))
        if node.op == CROSS_ATTENTION:  # the rows' encoder keys/values and the queries (cross_attention_cost)
            return OpCost(*cross_attention_cost(node, self._arg_shape))
        if node.op in (MOE, MOE_EXPERTS):  # the experts the batch is expected to activate (moe_cost)
            return OpCost(*moe_cost(node, self._arg_shape))
        if node.op in MATMUL_OPS:   # linear / mm / bmm and the quantized linear (matmul_cost)
            moved = sum(nbytes(s, d) for s, d in args) + out_bytes
            return OpCost(*matmul_cost(node, self._arg_shape, moved, self.spec, self.dtype))
        if node.op in GATHER_OPS:
            return OpCost(0.0, 2.0 * out_bytes, "elementwise")
        return OpCost(float(math.prod(out_shape)), sum(nbytes(s, d) for s, d in args) + out_bytes, "elementwise")

    def call_extent(self, positions: torch.Tensor | None) -> tuple[int, tuple[int, ...]]:
        """What the attention cost of a call reads from its query positions [B, S] (-1 = padding): the
        number of new tokens, and for each flash partition length of the graph the keys read in the call
        (each row's context rounded up to whole partitions, summed over rows). Calls with the same
        extent cost exactly the same."""
        if not self.attention_nodes:
            return 0, ()
        return attention_extent(positions, self._partitions)

    def attention_cost(self, node: Node, positions: torch.Tensor, fused: bool = True) -> OpCost:
        """Cost of one attention call given the query positions [B, S] (-1 = padding): see
        ``paged_attention_cost`` (the static-shape kernels compute every row of the graph, padding included)."""
        return self._attention_cost(node, self.call_extent(positions), fused)

    def _attention_cost(self, node: Node, extent: tuple[int, tuple[int, ...]], fused: bool) -> OpCost:
        return OpCost(*paged_attention_cost(node, self._arg_shape, extent, self._partitions, fused))

    def _attention_tile_bytes(self, node: Node) -> int:
        return attention_tile_bytes(node, self._arg_shape)

    # ---- units --------------------------------------------------------------------------------
    def _op_unit(self, node: Node) -> _Unit | None:
        name, spec = short_name(node.op), self.spec
        if node.op in ATTENTION_OPS:
            return _Unit(name, (node.name,), attention=node)
        if node.op in COLLECTIVE_OPS:
            link, sync = collective_seconds(node, spec)
            return _Unit(name, (node.name,), link_s=link, sync_s=sync)
        cost = self.op_cost(node)
        if is_host_op(node):
            moved = sum(nbytes(s, d) for s, d in self._arg_shapes(node)) + self.index.value_bytes(node.name)
            return _Unit(name, (node.name,), flops=cost.flops, copy_s=moved / spec.host_link_bandwidth,
                         host_s=cost.flops / HOST_FLOPS)
        if not cost.flops and not cost.bytes:
            return None
        compute, memory = _compute_memory(cost, spec, self.dtype)
        return _Unit(name, (node.name,), compute, memory, cost.flops, cost.bytes,
                     dequant_s=_dequant_seconds(cost, spec, self.dtype))

    def _group_unit(self, group) -> _Unit | None:
        """The fused unit of a group, or None when it does not fit in SRAM or is not faster."""
        nodes = [self.index.nodes[name] for name in group.members]
        if group.pattern == "attention":
            fits = (self._attention_tile_bytes(nodes[0]) <= self.spec.sram_bytes
                    or keeps_attention_scores_on_chip(self.spec.name))
            return _Unit(group.name, group.members, attention=nodes[0], fused=True) if fits else None
        if any(n.op in COLLECTIVE_OPS or is_host_op(n) for n in nodes):
            return None
        traffic = group_traffic(self.index, group)
        if sum(self.index.value_bytes(name) for name in traffic.intermediates) > self.spec.sram_bytes:
            return None
        costs = [self.op_cost(n) for n in nodes]
        dram = sum(self.index.value_bytes(v) for v in traffic.inputs + traffic.outputs)
        kind = max(costs, key=lambda c: c.bytes).kind
        compute = sum(_compute_memory(c, self.spec, self.dtype)[0] for c in costs)
        memory = _compute_memory(OpCost(0.0, dram, kind), self.spec, self.dtype)[1]
        unit = _Unit(group.name, group.members, compute, memory, sum(c.flops for c in costs), dram, fused=True,
                     dequant_s=sum(_dequant_seconds(c, self.spec, self.dtype) for c in costs))
        alone = sum(u.seconds for u in map(self._op_unit, nodes) if u is not None)
        return unit if unit.seconds < alone else None

    def _build_units(self) -> list[_Unit]:
        """Ops and fused groups in execution order (a group runs where its last op was)."""
        fused: dict[str, _Unit] = {}
        for group in self.groups:
            unit = self._group_unit(group)
            if unit is not None:
                fused.update({name: unit for name in group.members})
        units = []
        for node in self.index.graph.nodes:
            if node.name in fused:
                if node.name == fused[node.name].nodes[-1]:
                    units.append(fused[node.name])
            elif (unit := self._op_unit(node)) is not None:
                units.append(unit)
        return units

    # ---- per call -----------------------------------------------------------------------------
    def _attention_split(self, unit: _Unit, extent: tuple) -> tuple[float, float, OpCost]:
        cost = self._attention_cost(unit.attention, extent, fused=unit.fused)
        compute, memory = _compute_memory(cost, self.spec, self.dtype)
        queries = self._arg_shape(unit.attention, "query")[0][1]
        if queries > GEMV_MAX_ROWS:   # prefill: flash attention's efficiency grows with the sequence
            compute = cost.flops / (self.spec.peak_flops_for(self.dtype)
                                    * prefill_attention_compute(self.spec.name, queries))
        return compute, memory, cost

    def call_seconds(self, positions: torch.Tensor) -> tuple[float, float]:
        """(total, attention) simulated seconds of one graph call with query positions [B, S].

        The total includes collectives and host fallback ops; not the host<->device copies
        of the graph's inputs and outputs (the runtime costs those on the host link).
        """
        return self._call_seconds(self.call_extent(positions))

    def _call_seconds(self, extent: tuple) -> tuple[float, float]:
        attention = sum(max(self._attention_split(u, extent)[:2]) for u in self.units if u.attention is not None)
        return self.static_seconds + attention, attention

    def call(self, positions: torch.Tensor | None, host_in_bytes: int = 0, host_out_bytes: int = 0) -> CallCost:
        """``call_seconds`` and ``timeline`` of one call together, computed once per call extent and copy sizes."""
        key = (self.call_extent(positions), host_in_bytes, host_out_bytes)
        cached = self._calls.get(key) if self._calls is not None else None
        if cached is not None:
            return cached
        seconds, attention = self._call_seconds(key[0])
        events = tuple(self._timeline(key[0], host_in_bytes, host_out_bytes))
        categories = dict.fromkeys(CATEGORIES, 0.0)
        for event in events:
            categories[event.category] += event.duration_s
        result = CallCost(seconds, attention, events, tuple(categories.items()))
        if self._calls is not None and len(self._calls) < MAX_CACHED_CALLS:
            self._calls[key] = result
        return result

    def timeline(self, positions: torch.Tensor, host_in_bytes: int = 0,
                 host_out_bytes: int = 0) -> list[TimelineEvent]:
        """Every op / fused group of one call, in order, with its category and offset from the call start.

        Args:
            positions: the query positions [B, S] of the call (-1 = padding).
            host_in_bytes / host_out_bytes: bytes copied to the device before the call and back
                after it (External HDMA on the host link); 0 leaves them out.
        Returns:
            Events tiling ``call_seconds(positions)[0]`` plus the copies, without overlap.
        """
        return self._timeline(self.call_extent(positions), host_in_bytes, host_out_bytes)

    def _timeline(self, extent: tuple, host_in_bytes: int, host_out_bytes: int) -> list[TimelineEvent]:
        events: list[TimelineEvent] = []
        clock = 0.0

        def emit(name: str, category: str, seconds: float, args: dict) -> None:
            nonlocal clock
            if seconds > 0:
                events.append(TimelineEvent(name, category, clock, seconds, args))
                clock += seconds

        emit("copy inputs to device", EXTERNAL_HDMA, host_in_bytes / self.spec.host_link_bandwidth,
             {"bytes": host_in_bytes})
        for unit in self.units:
            args = {"nodes": ",".join(unit.nodes), "flops": unit.flops, "bytes": unit.bytes}
            compute, memory = unit.compute_s, unit.memory_s
            if unit.attention is not None:
                compute, memory, cost = self._attention_split(unit, extent)
                args.update(flops=cost.flops, bytes=cost.bytes)
            if unit.link_s or unit.sync_s:
                emit(unit.name, DEVICE_SYNC, unit.sync_s, args)
                emit(unit.name, DEVICE_HDMA, unit.link_s, args)
            elif unit.copy_s or unit.host_s:
                emit(unit.name, EXTERNAL_HDMA, unit.copy_s, args)
                emit(unit.name, HOST, unit.host_s, args)
            else:
                args.update(compute_us=compute * 1e6, dma_us=memory * 1e6)
                emit(unit.name, DEQUANTIZE, unit.dequant_s, args)  # a share of the compute, on its own lane
                emit(unit.name, NEURAL_ENGINE if compute >= memory else NEURAL_DMA,
                     max(compute, memory) - unit.dequant_s, args)
        emit("copy outputs to host", EXTERNAL_HDMA, host_out_bytes / self.spec.host_link_bandwidth,
             {"bytes": host_out_bytes})
        return events
