"""Op taxonomy of the simulated NPU and a read-only index over a graph's values.

The cost model and the fusion pass never execute anything: they work from operator names
and the static shapes stored in each node's ``meta``. This module says what kind of work
an op is (free relabelling, matmul, gather, attention, collective, host fallback) and
answers the graph questions both need (shape of a value, who uses it).
"""

from __future__ import annotations

import math

from optimum_npu.device.kernels import ATTENTION_OPS  # attention kernels: costed per call from the positions
from optimum_npu.device.kernels import QUANTIZED_LINEAR
from optimum_npu.device.kernels import COLLECTIVE_OPS  # inserted by the tensor- and expert-parallel passes
from optimum_npu.schema import ALL_REDUCE, Graph, Node, dtype_from_name, iter_refs
from optimum_npu.schema_ops import ALLOWED_OPS

_MISSING = object()

#: Ops that only re-label memory: no FLOPs, no DRAM traffic.
FREE_OPS = {
    "aten.view.default", "aten.reshape.default", "aten.unsqueeze.default", "aten.squeeze.dim",
    "aten.permute.default", "aten.transpose.int", "aten.t.default", "aten.expand.default", "aten.slice.Tensor",
    "aten.alias.default", "aten._assert_tensor_metadata.default", "aten.to.device", "aten.arange.default",
    "aten.arange.start", "aten.detach.default", "aten.lift_fresh_copy.default", "getitem",
}
#: Casts, free when the dtype does not change (``x.to(x.dtype)`` in HF norms).
CAST_OPS = {"aten.to.dtype", "aten._to_copy.default", "aten.to.dtype_layout", "aten.type_as.default"}
MATMUL_OPS = {"aten.linear.default", "aten.mm.default", "aten.addmm.default", "aten.matmul.default",
              "aten.bmm.default", QUANTIZED_LINEAR}
#: Ops that read only the rows they return (gathers).
GATHER_OPS = {"aten.embedding.default", "aten.index.Tensor", "aten.index_select.default", "aten.gather.default"}
#: Host fallback ops: ops the NPU cannot run, executed by the host CPU with their inputs and
#: outputs copied over the host link. None is needed by the supported models; a compiler
#: pass may also mark a node with ``meta["placement"] = "host"``.
HOST_OPS: frozenset[str] = frozenset()

#: A matmul whose output has at most this many rows is decode-shaped (GEMV-like): it streams
#: its weight once for a handful of rows and is bound by DRAM bandwidth.
GEMV_MAX_ROWS = 16


def short_name(op: str) -> str:
    """``aten.linear.default`` -> ``linear``; ``getitem`` -> ``getitem``."""
    parts = op.split(".")
    return parts[1] if len(parts) == 3 else op


def argument(node: Node, name: str, default=None):
    """The argument ``name`` of a node, by its schema name (``ALLOWED_OPS``), whether it was passed by
    position or as a keyword; ``default`` when the call leaves it out.

    The cost model, fusion and sizing read kernel arguments only through this, so adding an argument
    to a kernel's schema cannot make them read the wrong one.
    """
    names = ALLOWED_OPS.get(node.op)
    if names is None or name not in names:
        raise KeyError(f"{node.op} has no argument {name!r} (schema arguments: {list(names or ())})")
    position = names.index(name)
    if position < len(node.args):
        return node.args[position]
    value = node.kwargs.get(name, _MISSING)
    return default if value is _MISSING else value


def is_host_op(node: Node) -> bool:
    return node.op in HOST_OPS or node.meta.get("placement") == "host"


def nbytes(shape, dtype: str) -> int:
    return math.prod(shape) * dtype_from_name(dtype).itemsize


class GraphIndex:
    """Shapes, producers and users of every value of a graph (inputs and nodes)."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.nodes: dict[str, Node] = {node.name: node for node in graph.nodes}
        self.order: dict[str, int] = {node.name: i for i, node in enumerate(graph.nodes)}
        self.shapes: dict[str, tuple[list[int], str]] = {s.name: (list(s.shape), s.dtype) for s in graph.inputs}
        self.input_kinds: dict[str, str] = {s.name: s.kind for s in graph.inputs}
        self.consumers: dict[str, list[Node]] = {}
        for node in graph.nodes:
            if "shape" in node.meta:
                self.shapes[node.name] = (node.meta["shape"], node.meta["dtype"])
            for ref in dict.fromkeys(self.refs(node)):
                self.consumers.setdefault(ref, []).append(node)
        self.outputs = set(graph.outputs)

    @staticmethod
    def refs(node: Node) -> list[str]:
        return iter_refs(node.args) + iter_refs(node.kwargs)

    def value_bytes(self, name: str) -> int:
        if name not in self.shapes:
            return 0
        return nbytes(*self.shapes[name])

    def is_free(self, node: Node) -> bool:
        """Pure relabelling: views, and casts to the dtype the value already has."""
        if node.op in FREE_OPS:
            return True
        if node.op in CAST_OPS and "dtype" in node.meta:
            refs = self.refs(node)
            return bool(refs) and refs[0] in self.shapes and self.shapes[refs[0]][1] == node.meta["dtype"]
        return False

    def source(self, name: str) -> str:
        """The value ``name`` relabels: walks back through free ops to a non-free node or an input."""
        while name in self.nodes and self.is_free(self.nodes[name]) and self.refs(self.nodes[name]):
            name = self.refs(self.nodes[name])[0]
        return name

    def users(self, name: str) -> tuple[list[Node], bool]:
        """Non-free nodes that read ``name`` directly or through free ops, and whether it reaches a graph output."""
        found: dict[str, Node] = {}
        escapes = name in self.outputs
        stack = [name]
        while stack:
            for user in self.consumers.get(stack.pop(), []):
                if self.is_free(user):
                    escapes = escapes or user.name in self.outputs
                    stack.append(user.name)
                else:
                    found[user.name] = user
        return sorted(found.values(), key=lambda n: self.order[n.name]), escapes

    def operand(self, node: Node, name: str | None = None) -> str | None:
        """Source (through free ops) of the tensor a node takes as schema argument ``name`` (default: its
        first schema argument); None when that argument is not a graph value."""
        name = name or ALLOWED_OPS[node.op][0]
        value = argument(node, name)
        return self.source(value["ref"]) if isinstance(value, dict) and "ref" in value else None

    def operands(self, node: Node) -> list[str]:
        """Sources of the values a node reads (through free ops), in argument order, deduplicated."""
        return list(dict.fromkeys(self.source(ref) for ref in self.refs(node)))
