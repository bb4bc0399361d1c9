"""One interpretation of a tensor-parallel graph for all its in-process ranks at once (SPMD lockstep).

Every rank of a tensor-parallel group runs the same graph; only the weights and the KV caches
differ. Run rank by rank, the host pays the per-op dispatch N times. A ``LockstepProgram``
runs the graph once over *stacked* values: a value that differs per rank (anything computed
from a sharded weight or from a rank's cache) is held as one tensor ``[N, ...]`` whose slice
``r`` is exactly rank r's value; a value that is the same on every rank (the embedding, the
residual stream after an all-reduce, the logits after the all-gather) is held once.

Each node is translated once, at load time, by the rules of ``lockstep_ops``: element-wise ops
broadcast over the rank dimension, dimension arguments shift by one, a column-parallel linear
over a shared input is one linear over the ranks' stacked (= concatenated) weights, a
row-parallel one a batched matmul, the attention kernels fold the ranks into the batch over
the ranks' stacked caches, and the collectives reduce or concatenate over the rank dimension in
rank order (the arithmetic of ``InProcessGroup``). A node no rule covers raises
``LockstepUnsupported`` at load time and the engine keeps the per-rank path for that graph.
Like the executor, nothing here builds Python source or resolves names from the graph file:
operators come from the allow-list (``executor.resolve_op``).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from optimum_npu.device.executor import GraphExecutionError, resolve_op, value_dtypes
from optimum_npu.device.kernels import KERNELS
from optimum_npu.device.lockstep_kernels import MergedShards, merged_column_linear, rank_columns
from optimum_npu.device.lockstep_ops import translate, translate_host
from optimum_npu.device.lockstep_steps import Arguments, Call, LockstepUnsupported, Ref
from optimum_npu.schema import Graph, Node, iter_refs

_ASSERTS = {"aten._assert_tensor_metadata.default"}
_CASTS = {"aten.to.dtype", "aten.to.device", "aten._to_copy.default", "aten.to.dtype_layout"}


class LockstepProgram:
    """``graph`` translated for ``size`` ranks whose inputs ``stacked`` differ per rank (held ``[N, ...]``).

    Args:
        graph: the rank graph (the same on every rank).
        stacked: names of the inputs held stacked (sharded weights, state); every other input is shared.
        state: the state inputs (KV caches), held [rows, N, ...] (``RankStack``): only attention kernels read them.
        size: the number of ranks.
        kernels: operator overrides by name (the device's kernels).
        merges: sibling column-parallel linears run as one product (``linear_merging``), by their first
            member's name: the group and its ``MergedShards``. A group whose input is per-rank, or whose
            weights are not all per-rank, runs node by node.
        rewrites: host-fused steps by the name of the node they replace (``host_fusion``; an empty list
            drops a node whose value only the fused step read).
    Raises:
        LockstepUnsupported: a node has no rule for its stacked operands.
    """

    def __init__(self, graph: Graph, stacked: set[str], state: set[str], size: int,
                 kernels: dict[str, Callable] | None = None, merges: dict[str, tuple] | None = None,
                 rewrites: dict[str, list] | None = None):
        self.graph, self.size = graph, size
        self.kernels = KERNELS if kernels is None else kernels
        self.dtypes = value_dtypes(graph)
        self.slot_of: dict[str, int] = {}
        self.stacked: list[bool] = []
        self.ndims: list[int | None] = []
        self.source: list[str] = []          # the state input a slot is, or ""
        self.steps: list[Call] = []
        for spec in graph.inputs:
            self.new_slot(spec.name in stacked, len(spec.shape), spec.name if spec.name in state else "")
            self.slot_of[spec.name] = len(self.stacked) - 1
        self.num_inputs = len(self.stacked)
        outputs = set(graph.outputs)
        nodes = {node.name: node for node in graph.nodes}
        #: how many nodes (and graph outputs) read each value
        self.readers: dict[str, int] = {}
        for name in [*graph.outputs, *(ref for node in graph.nodes for ref in iter_refs([node.args, node.kwargs]))]:
            self.readers[name] = self.readers.get(name, 0) + 1
        for node in graph.nodes:
            if node.name in self.slot_of:      # a merged linear's member, defined with its group
                continue
            if node.op in _ASSERTS and node.name not in outputs:
                continue
            if node.name in (merges or {}) and self._merged(nodes, *merges[node.name]):
                continue
            if node.name in (rewrites or {}):
                self.node = node
                for host in rewrites[node.name]:
                    self.slot_of[host.name] = translate_host(self, host)
                continue
            forwarded = self._same_dtype_source(node)
            if forwarded is not None:
                self.slot_of[node.name] = forwarded
                continue
            self.node = node
            self.slot_of[node.name] = translate(self, node, Arguments(node, self.ref))
        self.outputs = [self.slot_of[name] for name in graph.outputs]

    def _merged(self, nodes: dict[str, Node], group, shards: MergedShards) -> bool:
        """Emits a sibling group's one product over a shared input and the members' columns; False (nothing
        emitted) when the input is per-rank, a member's weight is shared or a bias is not a graph value."""
        members = [nodes[name] for name in group.members]
        operands = [Arguments(member, self.ref) for member in members]
        weights = [a.get("weight") for a in operands]
        biases = [a.get("bias") for a in operands]
        if self.stacked[self.slot_of[group.input]] or not all(self.stacked[w] for w in weights) or \
                (group.biases is not None and not all(type(b) is Ref for b in biases)):
            return False
        self.node = members[0]
        product = self.emit(merged_column_linear, [self.op("aten.linear.default"), self.ref(group.input), shards],
                            stacked=False, ndim=None)
        start = 0
        for member, width in zip(members, group.widths):
            self.node = member
            self.slot_of[member.name] = self.emit(rank_columns, [product, start, width, self.size], stacked=True,
                                                  ndim=self.out_ndim())
            start += width * self.size
        return True

    # ---- builder API used by the rules -----------------------------------------------------------
    def ref(self, name: str) -> Ref:
        return Ref(self.slot_of[name])

    def new_slot(self, stacked: bool, ndim: int | None, source: str = "") -> int:
        self.stacked.append(stacked)
        self.ndims.append(ndim)
        self.source.append(source)
        return len(self.stacked) - 1

    def emit(self, fn: Callable, args: list, kwargs: dict | None = None, *, stacked: bool, ndim: int | None,
             source: str = "") -> Ref:
        """Appends a step writing a new slot; returns its reference."""
        slot = self.new_slot(stacked, ndim, source)
        self.steps.append(Call(fn, args, kwargs or {}, slot, self.node.name))
        return Ref(slot)

    def op(self, name: str | None = None) -> Callable:
        """The implementation of operator ``name`` (default: the node's)."""
        return resolve_op(name or self.node.op, self.kernels)

    def out_ndim(self) -> int | None:
        shape = self.node.meta.get("shape")
        return len(shape) if isinstance(shape, list) and all(isinstance(d, int) for d in shape) else None

    def refuse(self, why: str) -> LockstepUnsupported:
        return LockstepUnsupported(f"graph {self.graph.name!r}: node {self.node.name!r} ({self.node.op}): {why}")

    def _same_dtype_source(self, node: Node) -> int | None:
        """The slot a same-dtype cast forwards unchanged (no arithmetic on the one CPU-backed device)."""
        if node.op not in _CASTS or not node.args or not isinstance(node.args[0], dict) or \
                node.kwargs.get("memory_format"):
            return None
        source = node.args[0].get("ref")
        dtype = node.meta.get("dtype")
        if source is None or dtype is None or self.dtypes.get(source) != dtype or source not in self.slot_of:
            return None
        return self.slot_of[source]

    # ---- running -------------------------------------------------------------------------------
    def __call__(self, inputs: list) -> list:
        """Graph outputs of rank 0 (stacked values sliced, shared values as they are) for stacked ``inputs``
        in ``graph.inputs`` order."""
        values: list[Any] = list(inputs) + [None] * (len(self.stacked) - len(inputs))
        step = None
        try:
            with torch.no_grad():
                for step in self.steps:
                    values[step.slot] = step(values)
        except (RuntimeError, ValueError, TypeError, IndexError, KeyError, OverflowError, ZeroDivisionError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise GraphExecutionError(f"graph {self.graph.name!r}: node {step.node!r} failed in lockstep: {first}. "
                                      "The inputs do not fit the compiled graph, or the artifact is damaged: "
                                      "check the inputs, re-download or recompile the model") from None
        return [values[slot][0] if self.stacked[slot] else values[slot] for slot in self.outputs]
