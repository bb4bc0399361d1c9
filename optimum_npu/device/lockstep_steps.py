"""The steps of a lockstep program (``lockstep``): a call with its graph-value arguments filled at run time,
and a node's arguments read and rewritten by schema name while its lockstep rule is chosen."""

from __future__ import annotations

from typing import Any, Callable

import torch

from optimum_npu.schema import Node, decode_arg
from optimum_npu.schema_ops import ALLOWED_OPS


class LockstepUnsupported(ValueError):
    """A node of a graph has no lockstep rule for its stacked operands (the graph runs rank by rank)."""


class Ref(int):
    """An argument that is a graph value: the index of its slot."""


class Call:
    """One step: ``fn(*args, **kwargs)`` with the ``Ref`` arguments (possibly inside lists) filled at run time."""

    __slots__ = ("fn", "args", "kwargs", "fills", "slot", "node")

    def __init__(self, fn: Callable, args: list, kwargs: dict, slot: int, node: str):
        if isinstance(fn, torch._ops.OpOverload):
            fn = fn._op
        self.fn, self.args, self.kwargs, self.slot, self.node = fn, args, kwargs, slot, node
        self.fills = tuple((key, item) for key, item in [*enumerate(args), *kwargs.items()] if _has_ref(item))

    def __call__(self, values: list) -> Any:
        if not self.fills:
            return self.fn(*self.args, **self.kwargs)
        args, kwargs = list(self.args), dict(self.kwargs)
        for key, item in self.fills:
            value = _fill(item, values)
            if type(key) is int:
                args[key] = value
            else:
                kwargs[key] = value
        return self.fn(*args, **kwargs)


def _has_ref(item: Any) -> bool:
    return type(item) is Ref or (isinstance(item, list) and any(type(i) is Ref for i in item))


def _fill(item: Any, values: list) -> Any:
    if type(item) is Ref:
        return values[item]
    return [values[i] if type(i) is Ref else i for i in item]


class Arguments:
    """A node's decoded arguments, read and rewritten by schema name (positional or keyword alike)."""

    def __init__(self, node: Node, lookup: Callable[[str], Ref]):
        self.names = ALLOWED_OPS[node.op]
        self.args = [decode_arg(a, lookup) for a in node.args]
        self.kwargs = {k: decode_arg(v, lookup) for k, v in node.kwargs.items()}

    def get(self, name: str, default: Any = None) -> Any:
        position = self.names.index(name)
        if position < len(self.args):
            return self.args[position]
        return self.kwargs.get(name, default)

    def set(self, name: str, value: Any) -> None:
        position = self.names.index(name)
        if position < len(self.args):
            self.args[position] = value
        else:
            self.kwargs[name] = value

    def tensors(self) -> list[Ref]:
        """The graph values among the arguments, in order (list arguments flattened)."""
        found = []
        for item in [*self.args, *self.kwargs.values()]:
            found += [i for i in (item if isinstance(item, list) else [item]) if type(i) is Ref]
        return found
