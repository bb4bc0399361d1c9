"""The in-process ranks of a tensor-parallel engine, stacked once at load so a graph can run for all of them
at once (``LockstepProgram``).

``RankStack`` holds each tensor the ranks have by the same name as one tensor and hands every
rank views of its slice: a rank's weights are slice r of a ``[N, *shape]`` buffer each rank's
shard is copied into as it loads; its KV caches are slice r along dimension 1 of one
zero-initialised ``[rows, N, *rest]`` tensor per cache (rows: cache blocks or ring slots), so that
the ranks' caches read as one cache with N times the heads (the lockstep attention call). The
per-rank path reads those views, so both paths share the same bytes, and each rank's memory is
still reserved and accounted on its own device. A weight that is bit-identical on every rank
(replicated: embeddings, norms) runs once, as a shared value.

``LockstepGroup`` translates each graph once; a graph that cannot run in lockstep (an operator
without a rule, a weight the ranks hold in different shapes) is listed in ``refused`` with the
reason, and the engine runs it rank by rank.

Switch: ``OPTIMUM_NPU_TP_LOCKSTEP=0`` makes new engines run every graph rank by rank (default: on);
``DeviceEngine.lockstep`` flips one engine at run time (an A/B in ``bench/bench_generate.py``).
"""

from __future__ import annotations

import os
from typing import Callable

import torch

from optimum_npu.device.executor import value_dtypes
from optimum_npu.device.host_fusion import host_fusion_enabled, host_fusion_rewrites
from optimum_npu.device.kernels.packed_linear import LinearPacking, pack_matrix
from optimum_npu.device.linear_merging import LinearMerging
from optimum_npu.device.lockstep import LockstepProgram
from optimum_npu.device.lockstep_kernels import MergedShards, PackedShards
from optimum_npu.device.lockstep_steps import LockstepUnsupported
from optimum_npu.schema import Graph, TensorSpec, dtype_from_name

#: Environment variable: ``0`` / ``false`` / ``off`` runs tensor-parallel graphs rank by rank.
LOCKSTEP_ENV = "OPTIMUM_NPU_TP_LOCKSTEP"


def lockstep_default() -> bool:
    """Whether new engines run their in-process ranks in lockstep (``OPTIMUM_NPU_TP_LOCKSTEP``, default on)."""
    return os.environ.get(LOCKSTEP_ENV, "1").strip().lower() not in ("0", "false", "off", "no")


class RankStack:
    """Weights and state of ``size`` in-process ranks, stacked ``[size, ...]`` by name; ranks get views."""

    def __init__(self, size: int, state: dict[str, TensorSpec]):
        self.size = size
        self.state = {name: torch.zeros((spec.shape[0], size, *spec.shape[1:]), dtype=dtype_from_name(spec.dtype))
                      for name, spec in state.items()}
        self.weights: dict[str, torch.Tensor] = {}
        self.unstacked: set[str] = set()   # names some rank lacks or holds in another shape / dtype
        self.shared: set[str] = set()      # names whose slices are all equal (set by ``finish``)

    def rank_state(self, rank: int) -> dict[str, torch.Tensor]:
        """Rank ``rank``'s state tensors: views of its slices."""
        return {name: tensor[:, rank] for name, tensor in self.state.items()}

    def add_weights(self, rank: int, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Copies rank ``rank``'s weights into the stack (ranks in order from 0); returns the views it should use
        (its own tensor where the stack cannot hold it). Names bound to one tensor (tied weights) share a buffer."""
        views: dict[str, torch.Tensor] = {}
        seen: dict[int, str] = {}
        for name, tensor in weights.items():
            if id(tensor) in seen:
                first = seen[id(tensor)]
                views[name] = views[first]
                if rank == 0 and first in self.weights:
                    self.weights[name] = self.weights[first]
                continue
            seen[id(tensor)] = name
            if rank == 0:
                self.weights[name] = torch.empty((self.size, *tensor.shape), dtype=tensor.dtype)
            stack = self.weights.get(name)
            if stack is None or stack.shape[1:] != tensor.shape or stack.dtype != tensor.dtype:
                self.unstacked.add(name)
                views[name] = tensor
                continue
            stack[rank].copy_(tensor)
            views[name] = stack[rank]
        self.unstacked.update(set(self.weights) - set(weights))
        return views

    def finish(self) -> None:
        """After the last rank: marks the weights every rank holds identically (computed once in lockstep)."""
        self.shared = {name for name, stack in self.weights.items() if name not in self.unstacked
                       and all(torch.equal(stack[0], stack[r]) for r in range(1, self.size))}

    def binding(self, graph: Graph) -> tuple[list, set[str], set[str]]:
        """For ``graph``: per input, the stacked (or shared) tensor, or its name when the caller gives it; the
        names of the stacked inputs; and those of the state inputs."""
        binding, stacked, state = [], set(), set()
        for spec in graph.inputs:
            if spec.name in self.state:
                binding.append(self.state[spec.name])
                stacked.add(spec.name)
                state.add(spec.name)
            elif spec.kind == "weight":
                if spec.source in self.unstacked or spec.source not in self.weights:
                    raise LockstepUnsupported(f"graph {graph.name!r}: the ranks hold weight {spec.source!r} in "
                                              "different shapes")
                if spec.source in self.shared:
                    binding.append(self.weights[spec.source][0])
                else:
                    binding.append(self.weights[spec.source])
                    stacked.add(spec.name)
            else:
                binding.append(spec.name)
        return binding, stacked, state


class LockstepGroup:
    """Every graph that can run in lockstep, translated once over ``stack``; ``run(name, inputs)`` runs one.

    With ``packing``, the linear weights it chooses are bound packed: a shared one as one packed matrix, a
    stacked one as ``PackedShards`` (the per-rank path keeps reading the plain stack). With ``merging``, the
    sibling linears it merges run as one product over their ranks' shards (``MergedShards``) where they are
    column-parallel; both packed forms are made on first use. RMS norms and rotary embeddings run as one step
    each (``host_fusion``), as on one rank."""

    def __init__(self, stack: RankStack, graphs: dict[str, Graph], kernels: dict[str, Callable],
                 packing: LinearPacking | None = None, merging: LinearMerging | None = None):
        stack.finish()
        self.programs: dict[str, LockstepProgram] = {}
        self.bindings: dict[str, list] = {}
        self.refused: dict[str, str] = {}
        self._packed: dict[str, object] = {}   # weight source -> its packed form, shared by the graphs
        self._merged: dict[tuple, MergedShards] = {}   # merge key -> its shards, shared by the graphs
        for name, graph in graphs.items():
            try:
                binding, stacked, state = stack.binding(graph)
                merges = self._merges(stack, graph, merging) if merging is not None else None
                rewrites = host_fusion_rewrites(graph, value_dtypes(graph)) if host_fusion_enabled() else None
                self.programs[name] = LockstepProgram(graph, stacked, state, stack.size, kernels, merges, rewrites)
                self.bindings[name] = binding if packing is None else self._packed_binding(
                    stack, graph, binding, stacked, packing)
            except LockstepUnsupported as err:
                self.refused[name] = str(err)
            except (AttributeError, TypeError, ValueError, IndexError, KeyError) as err:
                # a graph the translation cannot read (e.g. a tampered argument) runs rank by rank, where the
                # executor refuses it with a translated error
                self.refused[name] = f"not translatable: {type(err).__name__}"

    def _merges(self, stack: RankStack, graph: Graph, merging: LinearMerging) -> dict[str, tuple]:
        """``graph``'s merged groups whose weights (and biases) the ranks hold stacked, by first member."""
        merges = {}
        for group in merging.groups.get(graph.name, ()):
            sources = [*group.weights, *(group.biases or ())]
            if any(source in stack.unstacked or source not in stack.weights for source in sources) or \
                    any(source in stack.shared for source in group.weights):
                continue
            if group.key not in self._merged:
                self._merged[group.key] = MergedShards([stack.weights[s] for s in group.weights], None if
                                                       group.biases is None else
                                                       [_held(stack, s) for s in group.biases])
            merges[group.members[0]] = (group, self._merged[group.key])
        return merges

    def _packed_binding(self, stack: RankStack, graph: Graph, binding: list, stacked: set[str],
                        packing: LinearPacking) -> list:
        """``binding`` with the weights ``packing`` chooses for ``graph`` in their packed form."""
        packed_binding = list(binding)
        for index, spec in enumerate(graph.inputs):
            if not packing.chosen(spec):
                continue
            if spec.source not in self._packed:
                tensor = stack.weights[spec.source]
                self._packed[spec.source] = PackedShards(tensor) if spec.name in stacked else pack_matrix(tensor[0])
            packed_binding[index] = self._packed[spec.source]
        return packed_binding

    def run(self, name: str, inputs: dict[str, torch.Tensor]) -> list:
        """Rank 0's outputs of graph ``name`` (every rank's state updated)."""
        arguments = [inputs[item] if isinstance(item, str) else item for item in self.bindings[name]]
        return self.programs[name](arguments)


def _held(stack: RankStack, source: str) -> torch.Tensor:
    """A weight as the lockstep program holds it: one tensor when every rank's is the same, else the stack."""
    return stack.weights[source][0] if source in stack.shared else stack.weights[source]
