"""Operator fusion: groups of ops the NPU runs as one kernel, keeping intermediates on chip.

The pass matches four patterns on the stored graph (names and static shapes only):

- ``rmsnorm``: ``pow -> mean -> add(eps) -> rsqrt -> mul(x, .)`` and its trailing scale/cast;
- ``rotary``: ``mul(x, cos) + mul(cat(-x2, x1), sin)`` (rotate-half rotary embedding);
- ``gated_mlp``: ``down(act(gate(x)) * up(x))`` (SwiGLU / GeGLU);
- ``attention``: each attention kernel, whose score matrix stays in SRAM (flash-style).

A group is named ``fused(a+b+c)`` after the distinct short names of its ops, in order.
Whether a group is worth fusing (its intermediates fit in SRAM, it is faster) is the
cost model's decision: this module only finds candidates and their DRAM traffic.
"""

from __future__ import annotations

from dataclasses import dataclass

from optimum_npu.device.ops import ATTENTION_OPS, CAST_OPS, MATMUL_OPS, GraphIndex, short_name
from optimum_npu.schema import Node

_ADDS = {"aten.add.Tensor", "aten.add.Scalar"}
_MUL = "aten.mul.Tensor"
_SCALES = {"aten.mul.Tensor", "aten.add.Tensor", "aten.div.Tensor"} | CAST_OPS
_ACTIVATIONS = {"aten.silu.default", "aten.gelu.default", "aten.relu.default"}


@dataclass(frozen=True)
class FusedGroup:
    """A candidate fused kernel: its pattern and member ops (non-free node names, graph order)."""

    pattern: str
    members: tuple[str, ...]
    name: str


@dataclass(frozen=True)
class GroupTraffic:
    """DRAM traffic of a group run as one kernel.

    Args:
        inputs: values read from outside the group (each read once).
        outputs: member results used outside the group or returned by the graph (written).
        intermediates: member results used only inside the group (kept in SRAM).
    """

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    intermediates: tuple[str, ...]


def group_name(ops: list[str]) -> str:
    """``fused(a+b+c)`` from op names: distinct short names in order of first appearance."""
    return "fused(" + "+".join(dict.fromkeys(short_name(op) for op in ops)) + ")"


def find_groups(index: GraphIndex) -> list[FusedGroup]:
    """Every non-overlapping match of the fusion patterns, in graph order of their last op."""
    matchers = (("attention", ATTENTION_OPS, _attention), ("rmsnorm", ("aten.rsqrt.default",), _rmsnorm),
                ("rotary", ("aten.neg.default",), _rotary), ("gated_mlp", tuple(_ACTIVATIONS), _gated_mlp))
    taken: set[str] = set()
    groups = []
    for pattern, anchors, match in matchers:
        for node in index.graph.nodes:
            if node.op not in anchors or node.name in taken:
                continue
            members = match(index, node)
            if not members or taken.intersection(m.name for m in members):
                continue
            members = sorted(members, key=lambda m: index.order[m.name])
            taken.update(m.name for m in members)
            groups.append(FusedGroup(pattern, tuple(m.name for m in members), group_name([m.op for m in members])))
    return sorted(groups, key=lambda g: index.order[g.members[-1]])


def group_traffic(index: GraphIndex, group: FusedGroup) -> GroupTraffic:
    """Which values a group reads from and writes to DRAM, and which stay on chip."""
    members = set(group.members)
    inputs: dict[str, None] = {}
    outputs, intermediates = [], []
    for name in group.members:
        for operand in index.operands(index.nodes[name]):
            if operand not in members:
                inputs[operand] = None
        users, escapes = index.users(name)
        if escapes or any(user.name not in members for user in users):
            outputs.append(name)
        else:
            intermediates.append(name)
    return GroupTraffic(tuple(inputs), tuple(outputs), tuple(intermediates))


# ---- patterns: each returns the member nodes, or None ---------------------------------------------
def _producer(index: GraphIndex, node: Node) -> Node | None:
    """The node producing a node's first schema argument (``self`` / ``input``), through free ops."""
    source = index.operand(node)
    return index.nodes.get(source) if source is not None else None


def _only_user(index: GraphIndex, name: str, ops) -> Node | None:
    users, escapes = index.users(name)
    return users[0] if len(users) == 1 and not escapes and users[0].op in ops else None


def _other_operand(index: GraphIndex, node: Node, known: str) -> Node | None:
    others = [o for o in index.operands(node) if o != known]
    return index.nodes.get(others[0]) if len(others) == 1 else None


def _constant_like(index: GraphIndex, name: str, depth: int = 3) -> bool:
    """A weight, or a value computed from weights only (Gemma's ``1 + weight.float()``)."""
    if index.input_kinds.get(name) == "weight":
        return True
    node = index.nodes.get(name)
    operands = index.operands(node) if node is not None and depth else []
    return bool(operands) and all(_constant_like(index, o, depth - 1) for o in operands)


def _attention(index: GraphIndex, node: Node) -> list[Node]:
    return [node]


def _rmsnorm(index: GraphIndex, rsqrt: Node) -> list[Node] | None:
    add = _producer(index, rsqrt)
    mean = _producer(index, add) if add is not None and add.op in _ADDS else None
    square = _producer(index, mean) if mean is not None and mean.op == "aten.mean.dim" else None
    if square is None or square.op not in ("aten.pow.Tensor_Scalar", _MUL):
        return None
    x = index.operand(square)
    users, _ = index.users(rsqrt.name)
    scaled = [u for u in users if u.op == _MUL and x in index.operands(u)]
    if len(scaled) != 1:
        return None
    members = [square, mean, add, rsqrt, scaled[0]]
    tail = scaled[0]
    while (user := _only_user(index, tail.name, _SCALES)) is not None:
        others = [o for o in index.operands(user) if o != tail.name and user.op != "aten.type_as.default"]
        if not all(_constant_like(index, o) for o in others):
            break
        members.append(user)
        tail = user
    return members


def _rotary(index: GraphIndex, neg: Node) -> list[Node] | None:
    x = index.operand(neg)
    cat = _only_user(index, neg.name, ("aten.cat.default",))
    if cat is None or x not in index.operands(cat):
        return None
    rotated = _only_user(index, cat.name, (_MUL,))
    total = _only_user(index, rotated.name, ("aten.add.Tensor",)) if rotated is not None else None
    direct = _other_operand(index, total, rotated.name) if total is not None else None
    if direct is None or direct.op != _MUL or x not in index.operands(direct):
        return None
    return [direct, neg, cat, rotated, total]


def _gated_mlp(index: GraphIndex, act: Node) -> list[Node] | None:
    gate = _producer(index, act)
    if gate is None or gate.op not in MATMUL_OPS:
        return None
    x = index.operand(gate)
    gated = _only_user(index, act.name, (_MUL,))
    up = _other_operand(index, gated, act.name) if gated is not None else None
    if up is None or up.op not in MATMUL_OPS or index.operand(up) != x:
        return None
    down = _only_user(index, gated.name, MATMUL_OPS)
    if down is None or index.operand(down) != gated.name:
        return None
    return [gate, act, up, gated, down]
