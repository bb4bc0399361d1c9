"""The device engine: a set of graphs loaded onto N simulated devices, run by bucket name.

One object for every family (decoder, visual encoder, future encoders and pipelines): it
reserves each device's memory by name before anything is loaded, binds the weights once per
rank, keeps the device-resident state tensors (KV caches) that the graphs share, builds one
cost model per graph, and runs a graph on every rank (collectives in lockstep in this
process, or one rank per process with torch.distributed). Each call advances the clocks and
returns one ``CallRecord`` (simulated seconds per profiler category, host bytes); with a
``Profiler`` every op of the call also lands on its device's track.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Callable

import torch

from optimum_npu.device.collectives import InProcessGroup, TorchDistributedGroup
from optimum_npu.device.cost import GraphCostModel
from optimum_npu.device.device import DeviceRegistry, NPUDevice, get_device
from optimum_npu.device.executor import Program, value_dtypes
from optimum_npu.device.host_fusion import host_fusion_enabled, host_fusion_rewrites
from optimum_npu.device.kernels import KERNELS
from optimum_npu.device.kernels.packed_linear import LinearPacking, packing_enabled
from optimum_npu.device.kernels.real_rows import real_prefix, real_rows, skips_padding
from optimum_npu.device.linear_merging import LinearMerging, merging_enabled
from optimum_npu.device.lockstep_group import LockstepGroup, RankStack, lockstep_default
from optimum_npu.device.memory import check_host_allocation, host_available_bytes
from optimum_npu.device.profiler import Profiler
from optimum_npu.device.segments import SegmentedProgram
from optimum_npu.device.sizing import plan_graph_memory
from optimum_npu.device.spec import NPUSpec
from optimum_npu.schema import Graph, TensorSpec, dtype_from_name

#: Input kind of the device-resident state the graphs of one engine share (allocated once per rank).
STATE_KIND = "kv_cache"


@dataclass(frozen=True)
class CallRecord:
    """What one graph call cost on the simulated devices.

    ``seconds``: device time (ops, fused groups, collectives, host fallback ops); ``attention_seconds``
    its attention part; ``host_seconds``: the host-link copies of ``host_bytes`` (inputs in, outputs
    out); ``categories``: the same time split per profiler category (``timeline.CATEGORIES``).
    """

    graph: str
    phase: str
    seconds: float
    attention_seconds: float
    host_seconds: float
    host_bytes: int
    categories: dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def total_seconds(self) -> float:
        """Device time plus the host copies: how far the call moves the clocks."""
        return self.seconds + self.host_seconds


def state_specs(graphs: dict[str, Graph]) -> dict[str, TensorSpec]:
    """The state inputs (KV caches) of a set of graphs, by name, each allocated once and shared."""
    specs: dict[str, TensorSpec] = {}
    for graph in graphs.values():
        for spec in graph.inputs_of_kind(STATE_KIND):
            specs.setdefault(spec.name, spec)
    return specs


def _host_rewrites(graph: Graph, merging: LinearMerging | None, merged: dict) -> dict:
    """The host steps one rank runs in place of ``graph``'s nodes: merged sibling linears (``linear_merging``),
    fused RMS norms and rotary embeddings (``host_fusion``)."""
    rewrites = host_fusion_rewrites(graph, value_dtypes(graph)) if host_fusion_enabled() else {}
    if merged:
        rewrites.update(merging.rewrites(graph, merged))
    return rewrites


class _Rank:
    """What one device holds: its weight shard, state tensors, programs and input bindings."""

    def __init__(self, rank: int, device: NPUDevice, graphs: dict[str, Graph], weights: dict[str, torch.Tensor],
                 kernels: dict, segmented: bool, error: type[Exception], state: dict[str, torch.Tensor] | None = None,
                 packing: LinearPacking | None = None, merging: LinearMerging | None = None):
        self.rank = rank
        self.device = device
        self.state = state if state is not None else {
            n: torch.zeros(s.shape, dtype=dtype_from_name(s.dtype)) for n, s in state_specs(graphs).items()}
        merged = {}
        if segmented:
            self.programs = {name: SegmentedProgram(graph, kernels) for name, graph in graphs.items()}
        else:   # sibling linears read their merged product (``linear_merging``): their own weights are not bound
            merged = merging.pack(weights) if merging is not None else {}
            self.programs = {name: Program(graph, kernels, _host_rewrites(graph, merging, merged))
                             for name, graph in graphs.items()}
        unbound = {source for weight_sources, _ in merged for source in weight_sources}
        self.bindings = {name: self._bind(graph, weights, error, packing, unbound) for name, graph in graphs.items()}

    def _bind(self, graph: Graph, weights: dict[str, torch.Tensor], error: type[Exception],
              packing: LinearPacking | None, unbound: set[str]) -> list:
        binding = []
        for spec in graph.inputs:
            if spec.kind == "weight":
                packed = None if packing is None else packing.bound(spec)
                tensor = packed if packed is not None else weights.get(spec.source)
                if tensor is None or tuple(tensor.shape) != spec.shape or tensor.dtype != dtype_from_name(spec.dtype):
                    raise error(f"graph {graph.name!r} needs weight {spec.source!r} {list(spec.shape)} "
                                f"{spec.dtype}, which the weights of rank {self.rank} do not hold; recompile the model")
                binding.append(None if spec.source in unbound else tensor)
            elif spec.kind == STATE_KIND:
                binding.append(self.state[spec.name])
            else:
                binding.append(spec.name)
        return binding

    def arguments(self, graph_name: str, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        return [inputs[item] if isinstance(item, str) else item for item in self.bindings[graph_name]]

    def environment(self, graph_name: str, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        graph = self.programs[graph_name].graph
        return dict(zip((spec.name for spec in graph.inputs), self.arguments(graph_name, inputs)))


class DeviceEngine:
    """Graphs loaded onto the devices of a (tensor-parallel) group; ``run(name, inputs)`` runs one.

    Args:
        graphs: the graphs to load, by name (already read and checked by the caller).
        spec: the target NPU spec.
        device_ids: the device of each rank (one rank per graph shard).
        dtype: the compute dtype (selects the cost model's peak FLOP/s).
        weights: ``weights(rank)`` -> that rank's tensors by name (called after its memory is reserved).
        weight_bytes: ``weight_bytes(rank)`` -> bytes of that rank's weights, known before loading them.
        owner: a label for memory reports.
        collectives: ``in_process`` (all ranks here) or ``torch.distributed`` (this process's rank only).
        registry: the devices' registry (``DEFAULT_REGISTRY`` when None).
        profiler: records every call's ops on the devices' tracks when given.
        error: the exception type of a load-time refusal (a weight the graphs need that is not there).

    Memory (weights, state, workspace, collective buffers) is reserved on every device, and the host
    checked to hold the state, before weights are loaded or state is allocated; ``release()`` (or
    garbage collection) frees it.
    """

    def __init__(self, graphs: dict[str, Graph], spec: NPUSpec, device_ids: list[int], dtype: str, *,
                 weights: Callable[[int], dict[str, torch.Tensor]], weight_bytes: Callable[[int], int],
                 owner: str, collectives: str = "in_process", registry: DeviceRegistry | None = None,
                 profiler: Profiler | None = None, error: type[Exception] = ValueError):
        size = len(device_ids)
        if collectives == "torch.distributed":
            communicator = TorchDistributedGroup()
            if communicator.size != size:
                raise ValueError(f"the torch.distributed world has {communicator.size} processes but the model "
                                 f"was compiled for tensor_parallel_size={size}; start {size} processes")
            local_ranks = [communicator.rank]
        else:
            communicator = InProcessGroup(size)
            local_ranks = list(range(size))
        self.graphs = dict(graphs)
        self.communicator = communicator
        self.spec = spec
        self.profiler = profiler
        self.costs = {name: GraphCostModel(graph, spec, dtype) for name, graph in graphs.items()}
        self.skips_padding = {name: skips_padding(graph) for name, graph in graphs.items()}
        plan = plan_graph_memory(graphs.values())  # the compiler's memory plan, from the graphs read
        workspace = plan.workspace
        buffers = plan.collective_buffers if size > 1 else 0
        state_bytes = sum(s.nbytes for s in state_specs(graphs).values())
        self.ranks: list[_Rank] = []
        self.memory: dict[str, int] = {}
        self._handles: list[tuple[NPUDevice, list[int]]] = []
        self._finalizer = weakref.finalize(self, _release, self._handles)
        if state_bytes:
            check_host_allocation(state_bytes * len(local_ranks), f"the KV cache of {owner}")
        distributed = collectives == "torch.distributed" and size > 1
        # tensor parallelism in this process: the ranks' tensors stacked once, so graphs can run in lockstep
        stack = RankStack(size, state_specs(graphs)) if len(local_ranks) > 1 else None
        # the linear weights packed for the CPU's BLAS where the host has room (``kernels/packed_linear``): one rank's
        # in its bindings, in-process ranks' in the lockstep group's
        packing = merging = None
        if packing_enabled():
            available = host_available_bytes()
            packing = LinearPacking(graphs, None if available is None else available // 2, len(local_ranks))
            if merging_enabled():   # packed sibling linears merge; their members are not packed one by one
                merging = LinearMerging(graphs, packing.sources)
        for rank in local_ranks:
            device = get_device(spec, device_ids[rank], registry)
            request = {"weights": weight_bytes(rank)}
            if state_bytes:
                request["kv_cache"] = state_bytes
            request["workspace"] = workspace
            if buffers:
                request["collective_buffers"] = buffers
            self._handles.append((device, device.memory.reserve(f"{owner} rank {rank}" if size > 1 else owner,
                                                                request)))
            self.memory = request
            kernels = {**KERNELS, **communicator.kernels(rank)} if distributed else KERNELS
            if stack is None:
                rank_weights, rank_state, rank_packing = weights(rank), None, packing
                if packing is not None:
                    packing.pack(rank_weights, merging.sources if merging is not None else frozenset())
            else:   # the lockstep group binds the packed forms; the per-rank path reads the plain stack
                rank_weights, rank_state, rank_packing = (stack.add_weights(rank, weights(rank)),
                                                          stack.rank_state(rank), None)
            self.ranks.append(_Rank(rank, device, graphs, rank_weights, kernels, stack is not None, error, rank_state,
                                    rank_packing, merging))
        #: run the in-process ranks' graphs as one interpretation over stacked tensors (``lockstep_group``)
        self.lockstep = lockstep_default()
        self.lockstep_group = LockstepGroup(stack, graphs, KERNELS, packing, merging) if stack is not None else None

    @property
    def devices(self) -> list[NPUDevice]:
        """The devices of this process's ranks, in rank order."""
        return [rank.device for rank in self.ranks]

    def reservations(self) -> list[dict[str, int]]:
        """What this engine holds on each of its devices, per category (its own reservations only)."""
        return [device.memory.held(handles) for device, handles in self._handles]

    @property
    def programs(self) -> dict[str, Program | SegmentedProgram]:
        """The first local rank's program of each graph."""
        return self.ranks[0].programs

    def execute(self, name: str, inputs: dict[str, torch.Tensor]):
        """Runs graph ``name`` on every local rank without costing it; returns the first rank's output(s)."""
        if len(self.ranks) == 1:
            rank = self.ranks[0]
            return rank.programs[name](*rank.arguments(name, inputs))
        if self.lockstep and name in self.lockstep_group.programs:
            outputs = self.lockstep_group.run(name, inputs)
        else:
            programs = [rank.programs[name] for rank in self.ranks]
            envs = [rank.environment(name, inputs) for rank in self.ranks]
            outputs = SegmentedProgram.run_group(programs, envs, self.communicator.collective)[0]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def run(self, name: str, inputs: dict[str, torch.Tensor], phase: str = "",
            positions: torch.Tensor | None = None):
        """Runs graph ``name`` and accounts for it.

        Args:
            name: the graph (bucket) to run.
            inputs: the graph's non-weight, non-state inputs by name (copied from the host).
            phase: a label for the profiler and the record (``prefill``, ``decode``, ``visual``).
            positions: query positions [B, S] (-1 = padding) of graphs with attention kernels.
        Returns:
            ``(outputs, CallRecord)``: the first rank's output (a tuple when the graph has several).
        """
        count = real_prefix(positions) if positions is not None and self.skips_padding[name] else None
        if count is None:
            outputs = self.execute(name, inputs)
        else:
            with real_rows(tuple(positions.shape), count):   # host time only: the cost is the whole grid's
                outputs = self.execute(name, inputs)
        tensors = outputs if isinstance(outputs, tuple) else (outputs,)
        in_bytes = sum(t.nbytes for t in inputs.values())
        out_bytes = sum(t.nbytes for t in tensors)
        call = self.costs[name].call(positions, in_bytes, out_bytes)   # computed once per call extent
        host = (in_bytes + out_bytes) / self.spec.host_link_bandwidth
        if self.profiler is not None:
            self.profiler.record_call(self.devices, name, phase, call.timeline)
        self.advance(call.seconds + host)
        return outputs, CallRecord(name, phase, call.seconds, call.attention_seconds, host, in_bytes + out_bytes,
                                   dict(call.categories))

    def copy_state_rows(self, names: list[str], source: torch.Tensor, target: torch.Tensor) -> float:
        """``state[name][target] = state[name][source]`` (first axis: cache blocks or slots) for each named state
        tensor on every local rank, all sources read before any row is written (a permutation is safe): the
        device-local copy beam search needs when beams swap parents. Costed as DRAM read + write; returns the
        simulated seconds (the clocks advance by them)."""
        moved = 0
        for rank in self.ranks:
            for name in names:
                tensor = rank.state[name]
                rows = tensor[source.long()].clone()
                tensor[target.long()] = rows
                if rank is self.ranks[0]:   # the ranks copy their own shards at the same time
                    moved += 2 * rows.nbytes
        seconds = moved / self.spec.dram_bandwidth
        self.advance(seconds)
        return seconds

    def advance(self, seconds: float) -> None:
        """Advances every local device's clock; collectives keep the ranks in step."""
        for device in self.devices:
            device.advance(seconds)

    def release(self) -> None:
        """Frees the engine's memory on every device (idempotent)."""
        self._finalizer()


def _release(handles: list[tuple[NPUDevice, list[int]]]) -> None:
    for device, reserved in handles:
        device.memory.release(reserved)
