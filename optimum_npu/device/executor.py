"""Runs a stored graph on the simulated device by interpreting its nodes.

No Python source is generated from a graph file: each node is resolved, once, to an
operator of the exact allow-list (``schema.ALLOWED_OPS``, looked up in a dict built from
that list, never by ``getattr`` on a file string) and its arguments to a template of
constants and value slots. Running the graph is a loop that calls those operators; the
only names it ever uses come from the validated graph (see ``docs/security.md``).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

from optimum_npu.device.cost import FREE_OPS
from optimum_npu.device.kernels import KERNELS
from optimum_npu.schema import ALLOWED_OPS, Graph, GraphFormatError, Node, decode_arg, dtype_from_name, iter_refs

_OPERATORS: dict[str, Callable] | None = None


def _operators() -> dict[str, Callable]:
    """The allow-listed operators of this torch build, by name (built from our own list, once)."""
    global _OPERATORS
    if _OPERATORS is None:
        table: dict[str, Callable] = {"getitem": operator.getitem}
        for name in ALLOWED_OPS:
            if name == "getitem":
                continue
            namespace, op, overload = name.split(".")
            packet = getattr(getattr(torch.ops, namespace), op, None)
            overload_fn = getattr(packet, overload, None) if packet is not None else None
            if overload_fn is not None:
                table[name] = overload_fn
        _OPERATORS = table
    return _OPERATORS


def resolve_op(name: str, kernels: dict[str, Callable] | None = None) -> Callable:
    """The implementation of an allow-listed operator; ``kernels`` overrides by name (device kernels,
    a rank's collectives)."""
    if name not in ALLOWED_OPS:
        raise GraphFormatError(f"operator {name!r} is not in the allow-list of this optimum-npu release")
    if kernels and name in kernels:
        return kernels[name]
    try:
        return _operators()[name]
    except KeyError:
        raise GraphFormatError(
            f"operator {name!r} is not available in this torch build; the artifact was compiled with another "
            "torch version: recompile it with `optimum-npu export`"
        ) from None


class GraphExecutionError(RuntimeError):
    """A graph node failed on the device (inputs that do not fit the graph, or a graph that cannot run)."""


#: Ops that change nothing when their output dtype equals their input's (HF norms cast fp32 to fp32).
_CASTS = {"aten.to.dtype", "aten.to.device", "aten._to_copy.default", "aten.to.dtype_layout"}
_ASSERTS = {"aten._assert_tensor_metadata.default"}


def value_dtypes(graph: Graph) -> dict[str, str]:
    """The dtype of every graph value (inputs and single-tensor nodes)."""
    dtypes = {spec.name: spec.dtype for spec in graph.inputs}
    dtypes.update({node.name: node.meta["dtype"] for node in graph.nodes if "dtype" in node.meta})
    return dtypes


def _no_op_source(node: Node, dtypes: dict[str, str]) -> str | None:
    """The value a no-op node forwards unchanged (a same-dtype cast on the one CPU-backed device)."""
    if node.op not in _CASTS or not node.args or not isinstance(node.args[0], dict):
        return None
    source = node.args[0].get("ref")
    dtype = node.meta.get("dtype")
    if source is None or dtype is None or dtypes.get(source) != dtype or node.kwargs.get("memory_format"):
        return None
    return source


@dataclass(frozen=True)
class HostNode:
    """A step the host runs in place of graph nodes (``NodeProgram``'s ``rewrites``): never read from a file.

    The device's own rewrites (``linear_merging``) build these from validated graphs: ``fn`` is one of
    the project's functions, ``args`` are encoded like a node's (``{"ref": name}`` for graph values)
    or in-memory constants (a packed weight), and ``op`` a label for errors.
    """

    name: str
    op: str
    fn: Callable
    args: list
    meta: dict = field(default_factory=dict)


class _SlotList:
    """A list argument holding references (``aten.cat``'s tensors): rebuilt at each call."""

    __slots__ = ("items",)

    def __init__(self, items: list):
        self.items = items

    def build(self, values: list) -> list:
        return [_value(item, values) for item in self.items]


class _Slot(int):
    """The index of a value in the interpreter's value list (an ``int`` that says it is a reference)."""


def _value(item: Any, values: list) -> Any:
    kind = type(item)
    if kind is _Slot:
        return values[item]
    if kind is _SlotList:
        return item.build(values)
    return item


def _template(encoded: Any, slot_of: dict[str, int]) -> Any:
    """An encoded argument with references replaced by slots and enums decoded (once, at load)."""
    if isinstance(encoded, list):
        items = [_template(v, slot_of) for v in encoded]
        if any(type(i) in (_Slot, _SlotList) for i in items):
            return _SlotList(items)
        return items
    if isinstance(encoded, dict) and "ref" in encoded:
        return _Slot(slot_of[encoded["ref"]])
    return decode_arg(encoded, lambda name: None)


def _fills(template: Iterable[tuple[Any, Any]]) -> tuple:
    """The (position or keyword, slot or slot list) pairs of a template that are filled at each call."""
    return tuple((key, item) for key, item in template if type(item) in (_Slot, _SlotList))


class _Step:
    """One node, resolved once: constant arguments in place, and the places its values are filled in."""

    __slots__ = ("fn", "args", "arg_fills", "kwargs", "kwarg_fills", "slot")

    def __init__(self, fn: Callable, args: list, kwargs: dict, slot: int):
        if isinstance(fn, torch._ops.OpOverload):
            fn = fn._op   # what OpOverload.__call__ forwards to: the same dispatcher call, one Python frame less
        self.fn, self.args, self.kwargs, self.slot = fn, args, kwargs, slot
        self.arg_fills = _fills(enumerate(args))
        self.kwarg_fills = _fills(kwargs.items())

    def __call__(self, values: list) -> Any:
        args, kwargs = self.args, self.kwargs
        if self.arg_fills:
            args = args.copy()
            for position, item in self.arg_fills:
                args[position] = _value(item, values)
        if self.kwarg_fills:
            kwargs = dict(kwargs)
            for key, item in self.kwarg_fills:
                kwargs[key] = _value(item, values)
        return self.fn(*args, **kwargs)


class NodeProgram:
    """Interprets ``nodes``: reads ``input_names`` (in that order), returns ``output_names`` values.

    Args:
        name: a label for errors.
        input_names: the values the nodes read that they do not define.
        nodes: validated nodes in execution order.
        output_names: values to return, in order.
        kernels: operator overrides by name.
        dtypes: value dtypes (``value_dtypes``); when given, metadata asserts and same-dtype
            casts are not executed (they forward their input: same arithmetic, less dispatch).
        rewrites: host steps by node name: a node named here runs as those steps instead (an empty
            list drops it: another node's steps define its value).
    """

    def __init__(self, name: str, input_names: Sequence[str], nodes: Iterable[Node], output_names: Sequence[str],
                 kernels: dict[str, Callable], dtypes: dict[str, str] | None = None,
                 rewrites: Mapping[str, list[HostNode]] | None = None):
        self.name = name
        slot_of: dict[str, int] = {}
        for input_name in input_names:
            slot_of[input_name] = len(slot_of)
        self.num_inputs = len(slot_of)
        self.steps: list[_Step] = []
        self.step_nodes: list[Node | HostNode] = []
        rewrites = rewrites or {}
        for node in nodes:
            if node.name in rewrites:
                for host in rewrites[node.name]:
                    slot_of[host.name] = len(slot_of)
                    self.steps.append(_Step(host.fn, [_template(a, slot_of) for a in host.args], {},
                                            slot_of[host.name]))
                    self.step_nodes.append(host)
                continue
            if dtypes is not None and node.op in _ASSERTS and node.name not in output_names:
                continue
            source = _no_op_source(node, dtypes) if dtypes is not None else None
            if source is not None and source in slot_of:
                slot_of[node.name] = slot_of[source]
                continue
            args = [_template(a, slot_of) for a in node.args]
            kwargs = {k: _template(v, slot_of) for k, v in node.kwargs.items()}
            slot_of[node.name] = len(slot_of)
            self.steps.append(_Step(resolve_op(node.op, kernels), args, kwargs, slot_of[node.name]))
            self.step_nodes.append(node)
        self.num_slots = len(slot_of)
        self.slot_of = slot_of
        self.output_slots = [slot_of[name] for name in output_names]

    def run(self, inputs: Sequence[Any]) -> list:
        """Every slot's value after running the nodes on ``inputs``."""
        values: list[Any] = list(inputs) + [None] * (self.num_slots - len(inputs))
        index = 0
        try:
            for index, step in enumerate(self.steps):
                values[step.slot] = step(values)
        except (RuntimeError, ValueError, TypeError, IndexError, KeyError, OverflowError, ZeroDivisionError) as err:
            node = self.step_nodes[index]
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise GraphExecutionError(f"graph {self.name!r}: node {node.name!r} ({node.op}) failed: {first}. "
                                      "The inputs do not fit the compiled graph, or the artifact is damaged: "
                                      "check the inputs, re-download or recompile the model") from None
        return values

    def __call__(self, *inputs: Any) -> list:
        """The output values, in ``output_names`` order."""
        values = self.run(inputs)
        return [values[slot] for slot in self.output_slots]


class Program:
    """An executable graph: ``program(*tensors)`` with tensors in ``graph.inputs`` order.

    ``kernels`` overrides operators by name (default: the device's direct kernels); pass
    ``{}`` to go through the dispatcher, e.g. to propagate shapes with fake tensors. ``rewrites``:
    host steps run in place of named nodes (``NodeProgram``).
    """

    def __init__(self, graph: Graph, kernels: dict[str, Callable] | None = None,
                 rewrites: Mapping[str, list[HostNode]] | None = None):
        kernels = KERNELS if kernels is None else kernels
        self.graph = graph
        # shape propagation (kernels={}) keeps every node; execution skips the no-ops
        dtypes = value_dtypes(graph) if kernels else None
        self.nodes = NodeProgram(graph.name, [spec.name for spec in graph.inputs], graph.nodes,
                                 list(graph.outputs), kernels, dtypes, rewrites)

    def __call__(self, *tensors: torch.Tensor):
        with torch.no_grad():
            outputs = self.nodes(*tensors)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def values(self, *tensors: torch.Tensor) -> dict[str, Any]:
        """Every node's value by node name (shape propagation)."""
        with torch.no_grad():
            values = self.nodes.run(tensors)
        return {name: values[slot] for name, slot in self.nodes.slot_of.items()}


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
