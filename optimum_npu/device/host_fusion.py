"""RMS normalisation and rotary embedding run as one host step each, with the graph's own arithmetic.

A decode step of a small model spends much of its host time on small operators: every layer's two
RMS norms are five graph nodes each (``pow``, ``mean``, ``add eps``, ``rsqrt``, ``mul``), and the
rotary embedding of its queries and keys seven each (``x * cos + cat(-x2, x1) * sin``). Each node
costs the interpreter and the dispatcher a few microseconds on a cache the weights have just
flushed. This module finds those chains by their exact structure and replaces each with one host
step (``executor.HostNode``) that runs the same operators on the same values in the same order, so
the results are bit-identical (a mean is the sum divided by the count, as ATen computes it on the
CPU); only the interpretation is saved. A chain matches only when every intermediate value is read
by the chain alone, in float32; anything else runs node by node. Host-only: the cost model costs
the graph's nodes (and fuses them by its own rules, ``fusion``). ``OPTIMUM_NPU_HOST_FUSION=0`` turns
it off (an A/B switch).
"""

from __future__ import annotations

import os
from collections import Counter

import torch

from optimum_npu.device.executor import HostNode
from optimum_npu.device.ops import GraphIndex
from optimum_npu.schema import Graph, Node, ref_name

#: Environment variable: ``0`` / ``false`` / ``off`` / ``no`` runs norms and rotary embeddings node by node.
HOST_FUSION_ENV = "OPTIMUM_NPU_HOST_FUSION"
_MUL, _ADD = "aten.mul.Tensor", "aten.add.Tensor"


def host_fusion_enabled() -> bool:
    """Whether new engines run RMS norms and rotary embeddings as one host step each (default on)."""
    return os.environ.get(HOST_FUSION_ENV, "1").strip().lower() not in ("0", "false", "off", "no")


def rms_normalized(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x [..., D] -> x * rsqrt(mean(x², -1) + eps): the graph's ``pow``, ``mean`` (sum, then / D), ``add``,
    ``rsqrt`` and ``mul``, with the [..., 1] intermediates updated in place."""
    return x * x.pow(2).sum(-1, keepdim=True).div_(x.shape[-1]).add_(eps).rsqrt_()


def rotate_half_embedded(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [..., D] -> x * cos + cat(-x[..., D/2:], x[..., :D/2]) * sin (cos / sin broadcast against x)."""
    half = x.shape[-1] // 2
    return torch.add(x * cos, torch.cat((x[..., half:].neg(), x[..., :half]), -1) * sin)


def host_fusion_rewrites(graph: Graph, dtypes: dict[str, str]) -> dict[str, list[HostNode]]:
    """The host steps replacing ``graph``'s RMS-norm and rotary chains (``NodeProgram``'s ``rewrites``);
    ``dtypes``: every value's dtype (``executor.value_dtypes``)."""
    matcher = _Matcher(graph, dtypes)
    rewrites: dict[str, list[HostNode]] = {}
    for node in graph.nodes:
        if node.op == "aten.rsqrt.default":
            found = matcher.rms_norm(node)
        elif node.op == "aten.neg.default":
            found = matcher.rotary(node)
        else:
            continue
        if found is not None and not set(found[0]) & set(rewrites):
            dropped, step = found
            rewrites.update({name: [] for name in dropped})
            rewrites[step.name] = [step]
    return rewrites


class _Matcher:
    """Exact structural matches on one graph (values read once, float32, constant arguments as expected)."""

    def __init__(self, graph: Graph, dtypes: dict[str, str]):
        index = GraphIndex(graph)
        self.nodes, self.users, self.dtypes = index.nodes, index.consumers, dtypes
        #: how many times each value is read (every reference of every node, and the graph's outputs)
        self.readers = Counter(graph.outputs) + Counter(ref for node in graph.nodes for ref in index.refs(node))

    def node(self, encoded, op: str, arity: int) -> Node | None:
        """The node an argument refers to, when it is ``op`` with ``arity`` positional arguments and no
        keywords, read by one node only (an intermediate of the chain), in float32."""
        name = ref_name(encoded)
        node = self.nodes.get(name) if name is not None else None
        if node is None or node.op != op or len(node.args) != arity or node.kwargs or self.readers[name] != 1 \
                or self.dtypes.get(name) != "float32":
            return None
        return node

    def last_dim(self, name: str, dim) -> bool:
        shape = self.nodes[name].meta.get("shape") if name in self.nodes else None
        return type(dim) is int and (dim == -1 or (isinstance(shape, list) and dim == len(shape) - 1))

    def rms_norm(self, rsqrt: Node) -> tuple[list[str], HostNode] | None:
        add = self.node(rsqrt.args[0] if len(rsqrt.args) == 1 and not rsqrt.kwargs else None, _ADD, 2)
        mean = self.node(add.args[0], "aten.mean.dim", 3) if add is not None else None
        square = self.node(mean.args[0], "aten.pow.Tensor_Scalar", 2) if mean is not None else None
        if square is None or type(add.args[1]) not in (int, float) or mean.args[2] is not True or \
                not isinstance(mean.args[1], list) or len(mean.args[1]) != 1 or \
                not self.last_dim(mean.name, mean.args[1][0]) or square.args[1] not in (2, 2.0) or \
                self.readers[rsqrt.name] != 1:
            return None
        x = ref_name(square.args[0])
        users = self.users.get(rsqrt.name, [])
        scaled = users[0] if len(users) == 1 else None
        if x is None or self.dtypes.get(x) != "float32" or scaled is None or scaled.op != _MUL or scaled.kwargs or \
                _other(scaled, rsqrt.name) != x or self.dtypes.get(scaled.name) != "float32":
            return None
        return ([square.name, mean.name, add.name, rsqrt.name],
                HostNode(scaled.name, "host.rms_norm", rms_normalized, [{"ref": x}, float(add.args[1])]))

    def rotary(self, neg: Node) -> tuple[list[str], HostNode] | None:
        second = self.node(neg.args[0] if len(neg.args) == 1 and not neg.kwargs else None, "aten.slice.Tensor", 4)
        users = self.users.get(neg.name, [])
        cat = users[0] if len(users) == 1 and self.readers[neg.name] == 1 else None
        if second is None or cat is None or cat.op != "aten.cat.default" or cat.kwargs or len(cat.args) != 2 or \
                not isinstance(cat.args[0], list) or len(cat.args[0]) != 2 or ref_name(cat.args[0][0]) != neg.name:
            return None
        first = self.node(cat.args[0][1], "aten.slice.Tensor", 4)
        x = ref_name(second.args[0])
        shape = self.nodes[x].meta.get("shape") if x in self.nodes else None
        if first is None or x is None or ref_name(first.args[0]) != x or self.dtypes.get(x) != "float32" or \
                not isinstance(shape, list) or not shape or type(shape[-1]) is not int or shape[-1] % 2 or \
                not self.last_dim(cat.name, cat.args[1]) or not all(
                    self.last_dim(x, s.args[1]) for s in (first, second)) or \
                first.args[2:] != [0, shape[-1] // 2] or second.args[2] != shape[-1] // 2 or \
                type(second.args[3]) is not int or second.args[3] < shape[-1] or self.readers[cat.name] != 1:
            return None
        rotated = self._only_user(cat.name, _MUL)
        total = self._only_user(rotated.name, _ADD) if rotated is not None else None
        sin = _other(rotated, cat.name) if rotated is not None else None
        direct = self.nodes.get(_other(total, rotated.name) or "") if total is not None and not total.kwargs else None
        cos = _other(direct, x) if direct is not None and direct.op == _MUL and not direct.kwargs else None
        if sin is None or cos is None or self.readers[direct.name] != 1 or self.dtypes.get(total.name) != "float32" \
                or any(self.dtypes.get(name) != "float32" for name in (sin, cos)):
            return None
        return ([first.name, second.name, neg.name, cat.name, rotated.name, direct.name],
                HostNode(total.name, "host.rotary", rotate_half_embedded, [{"ref": x}, {"ref": cos}, {"ref": sin}]))

    def _only_user(self, name: str, op: str) -> Node | None:
        users = self.users.get(name, [])
        if len(users) != 1 or self.readers[name] != 1 or users[0].op != op or users[0].kwargs or \
                len(users[0].args) != 2:
            return None
        return users[0]


def _other(node: Node, known: str) -> str | None:
    """The other operand of a two-operand node, when one operand is ``known`` and the other a reference."""
    names = [ref_name(arg) for arg in node.args]
    if len(names) != 2 or known not in names or None in names or names[0] == names[1]:
        return None
    return names[1] if names[0] == known else names[0]
