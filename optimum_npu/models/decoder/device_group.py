"""The devices one compiled decoder runs on: a tensor-parallel group of simulated NPUs.

Every rank runs the same graph with its own weight shard and KV-cache shard; the
collective nodes of the graph go through a communicator (ranks as threads of this
process, or one rank per process with torch.distributed). Memory is reserved on each
device for what that rank holds.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open

from optimum_npu.compile.artifact import ArtifactError, read_graph
from optimum_npu.compile.weights import load_weights, read_aliases
from optimum_npu.device.collectives import InProcessGroup, TorchDistributedGroup
from optimum_npu.device.cost import GraphCostModel
from optimum_npu.device.device import NPUDevice, get_device
from optimum_npu.device.memory import check_host_allocation
from optimum_npu.device.executor import Program
from optimum_npu.device.kernels import KERNELS
from optimum_npu.device.sizing import plan_graph_memory
from optimum_npu.device.segments import SegmentedProgram
from optimum_npu.device.spec import NPUSpec
from optimum_npu.schema import Graph, dtype_from_name, weights_file


#: Bytes per element of the dtypes safetensors files name in their header.
_SAFETENSORS_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                         "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}


def stored_weight_bytes(path: Path) -> int:
    """Bytes of the tensors a safetensors file holds, from its header alone (nothing is loaded)."""
    total = 0
    try:
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                piece = handle.get_slice(name)
                count = 1
                for dim in piece.get_shape():
                    count *= dim
                total += count * _SAFETENSORS_ITEMSIZE.get(piece.get_dtype(), 8)
    except Exception as err:  # safetensors raises its own error types for a corrupt header
        raise ArtifactError(f"{path} is not a readable safetensors file ({str(err)[:200]}); re-download or "
                            "recompile the model") from None
    return total


class _Rank:
    """What one device holds: its weight shard, KV-cache shard, programs and input bindings."""

    def __init__(self, rank: int, device: NPUDevice, graphs: dict[str, Graph], weights: dict[str, torch.Tensor],
                 kernels: dict, segmented: bool):
        self.rank = rank
        self.device = device
        cache_specs = graphs["prefill"].inputs_of_kind("kv_cache")
        self.kv_cache = {s.name: torch.zeros(s.shape, dtype=dtype_from_name(s.dtype)) for s in cache_specs}
        program = SegmentedProgram if segmented else Program
        self.programs = {name: program(graph, kernels) for name, graph in graphs.items()}
        self.bindings = {name: self._bind(graph, weights) for name, graph in graphs.items()}

    def _bind(self, graph: Graph, weights: dict[str, torch.Tensor]) -> list:
        binding = []
        for spec in graph.inputs:
            if spec.kind == "weight":
                tensor = weights.get(spec.source)
                if tensor is None or tuple(tensor.shape) != spec.shape or tensor.dtype != dtype_from_name(spec.dtype):
                    raise ArtifactError(f"graph {graph.name!r} needs weight {spec.source!r} {list(spec.shape)} "
                                        f"{spec.dtype}, which the weights of rank {self.rank} do not hold; "
                                        "recompile the model")
                binding.append(tensor)
            elif spec.kind == "kv_cache":
                binding.append(self.kv_cache[spec.name])
            else:
                binding.append(spec.name)
        return binding

    def arguments(self, graph_name: str, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        return [inputs[item] if isinstance(item, str) else item for item in self.bindings[graph_name]]

    def run(self, graph_name: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.programs[graph_name](*self.arguments(graph_name, inputs))

    def environment(self, graph_name: str, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        graph = self.programs[graph_name].graph
        return dict(zip((spec.name for spec in graph.inputs), self.arguments(graph_name, inputs)))


class DeviceGroup:
    """Loads a compiled decoder's graphs onto its devices and runs a graph on every rank.

    Args:
        root: the verified artifact directory.
        graph_names: the graphs to load.
        spec: the target NPU spec.
        device_ids: the device of each rank.
        dtype: the compute dtype (for the cost model).
        collectives: ``in_process`` (all ranks here) or ``torch.distributed`` (this process's rank only).
        owner: a label for memory reports.
        validate: called with the graphs once read, before anything is sized or allocated from them.

    Device memory is reserved as the compiler planned it, from the graphs (``device.sizing``: weights per
    tensor, KV cache from the cache inputs, workspace by liveness, collective buffers); the weights file's
    header must hold exactly the weights the graphs bind. The host is checked to hold the KV cache before
    weights are loaded or the cache is allocated.
    """

    def __init__(self, root: Path, graph_names: list[str], spec: NPUSpec, device_ids: list[int], dtype: str,
                 collectives: str, owner: str, validate: Callable[[dict[str, Graph]], None] | None = None):
        size = len(device_ids)
        graphs = {name: read_graph(root, name) for name in graph_names}
        if validate is not None:
            validate(graphs)
        if collectives == "torch.distributed":
            communicator = TorchDistributedGroup()
            if communicator.size != size:
                raise ValueError(f"the torch.distributed world has {communicator.size} processes but the model "
                                 f"was compiled for tensor_parallel_size={size}; start {size} processes")
            local_ranks = [communicator.rank]
        else:
            communicator = InProcessGroup(size)
            local_ranks = list(range(size))
        self.communicator = communicator
        self.spec = spec
        self.costs = {name: GraphCostModel(graph, spec, dtype) for name, graph in graphs.items()}
        plan = plan_graph_memory(graphs.values())  # the compiler's memory plan, from the graphs read
        kv_bytes = plan.kv_cache
        self.ranks: list[_Rank] = []
        self.memory: dict[str, int] = {}
        self._handles: list[tuple[NPUDevice, list[int]]] = []
        self._finalizer = weakref.finalize(self, _release, self._handles)
        check_host_allocation(kv_bytes * len(local_ranks), f"the KV cache of {owner}")
        for rank in local_ranks:
            device = get_device(spec, device_ids[rank])
            request = plan.request()
            stored = stored_weight_bytes(root / weights_file(rank, size))
            if stored != request["weights"]:
                raise ArtifactError(_weights_mismatch(root / weights_file(rank, size), graphs, stored,
                                                      request["weights"]))
            self._handles.append((device, device.memory.reserve(f"{owner} rank {rank}", request)))
            self.memory = request
            weights = load_weights(root / weights_file(rank, size))
            distributed = collectives == "torch.distributed" and size > 1
            kernels = {**KERNELS, **communicator.kernels(rank)} if distributed else KERNELS
            self.ranks.append(_Rank(rank, device, graphs, weights, kernels, segmented=len(local_ranks) > 1))

    @property
    def devices(self) -> list[NPUDevice]:
        return [rank.device for rank in self.ranks]

    def run(self, graph_name: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Runs the graph on every local rank (collectives included); returns the first rank's output."""
        if len(self.ranks) == 1:
            return self.ranks[0].run(graph_name, inputs)
        programs = [rank.programs[graph_name] for rank in self.ranks]
        envs = [rank.environment(graph_name, inputs) for rank in self.ranks]
        outputs = SegmentedProgram.run_group(programs, envs, self.communicator.collective)
        return outputs[0][0]

    def advance(self, seconds: float) -> None:
        """Advances every device's clock; collectives keep the ranks in step."""
        for device in self.devices:
            device.advance(seconds)

    def release(self) -> None:
        """Frees the group's memory on every device."""
        self._finalizer()


def _weights_mismatch(path: Path, graphs: dict[str, Graph], stored: int, planned: int) -> str:
    """The error for a weights file whose header does not hold the bytes the graphs bind, naming what is missing."""
    with safe_open(str(path), framework="pt") as handle:
        names = set(handle.keys())
        names |= set(read_aliases(handle.metadata(), names, path))
    missing = sorted({spec.source for graph in graphs.values() for spec in graph.inputs_of_kind("weight")} - names)
    detail = f"; the graphs need weight {missing[0]!r}, which it does not hold" if missing else ""
    return (f"{path.name} holds {stored} bytes of weights but the graphs bind {planned}{detail}; the artifact is "
            "damaged or was not written by this version of optimum-npu: re-download or recompile the model")


def _release(handles: list[tuple[NPUDevice, list[int]]]) -> None:
    for device, reserved in handles:
        device.memory.release(reserved)
