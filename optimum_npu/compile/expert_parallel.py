"""Expert parallelism as a rewrite of the graphs' ``npu.moe`` nodes.

Under ``expert_parallel_size`` = n the experts of every MoE layer are spread over the n devices of the
group, contiguously (rank d holds experts d*E/n .. (d+1)*E/n - 1: the tensor-parallel plan cuts the
stacked expert weights along their first dimension, ``models/adapters/tp_plan.py``). Each ``npu.moe``
node becomes::

    dispatch = npu.moe_dispatch(hidden, router_logits, top_k, normalize, cast, n)  # all-to-all (+ gpt-oss routing)
    tokens, weights = dispatch[0] -> [n*C, H], dispatch[1] -> [n*C, E/n]
    partial  = npu.moe_experts(tokens, weights, gate_up, down, top_k, E, **biases/activation)  # this rank's experts
    returned = npu.all_to_all(partial -> [n, C, H], n)                                # combine
    mine     = sum(returned, dim=0)                                                  # [C, H]: my tokens
    out      = npu.all_gather(mine, 0, n)[:T]                                        # [T, H] on every rank

The hidden states are replicated over the group (attention is replicated or tensor-parallel with an
all-reduce), so rank r routes only its share of the tokens (C = ceil(T / n) rows) and the all-gather
restores the replicated stream. The graph stays rank-agnostic: the communicator knows its rank.
"""

from __future__ import annotations

from optimum_npu.device.kernels import MOE, MOE_EXPERTS
from optimum_npu.device.ops import argument
from optimum_npu.schema import ALL_GATHER, ALL_TO_ALL, MOE_DISPATCH, Graph, Node

#: ``npu.moe`` arguments of the expert function, passed on to ``npu.moe_experts`` when the node sets them.
EXPERT_ARGUMENTS = ("gate_up_bias", "down_bias", "interleaved", "swiglu_alpha", "swiglu_limit", "gate_up_scale",
                    "down_scale")


#: Views through which an ``npu.moe`` node may read a stacked expert weight (gpt-oss: transposed).
WEIGHT_VIEWS = ("aten.transpose.int", "aten.t.default", "aten.permute.default")


def _ref(name: str) -> dict:
    return {"ref": name}


def _ref_name(value) -> str | None:
    return value["ref"] if isinstance(value, dict) and "ref" in value else None


def expert_parallel_nodes(node: Node, size: int, experts: int) -> list[Node]:
    """The expert-parallel form of one ``npu.moe`` node over ``size`` ranks (its value ends in ``<name>_out``).

    Args:
        node: the ``npu.moe`` node, with its one-device output shape in ``meta`` ([T, H]).
        size: the expert-parallel group size.
        experts: the model's experts per layer (E, over all ranks).
    """
    hidden, logits, gate_up, down, top_k, normalize, cast = (argument(node, key) for key in (
        "hidden", "router_logits", "gate_up", "down", "top_k", "normalize", "weights_in_input_dtype"))
    expert_function = {key: value for key in EXPERT_ARGUMENTS if (value := argument(node, key)) is not None}
    dispatch = [hidden, logits, top_k, normalize, cast, size] + (
        [True] if argument(node, "softmax_after_topk", False) else [])
    tokens, hidden_size = node.meta["shape"]
    name = node.name
    return [
        Node(f"{name}_dispatch", MOE_DISPATCH, dispatch, {}),
        Node(f"{name}_tokens", "getitem", [_ref(f"{name}_dispatch"), 0], {}),
        Node(f"{name}_weights", "getitem", [_ref(f"{name}_dispatch"), 1], {}),
        Node(f"{name}_tokens_flat", "aten.reshape.default", [_ref(f"{name}_tokens"), [-1, hidden_size]], {}),
        Node(f"{name}_weights_flat", "aten.reshape.default", [_ref(f"{name}_weights"), [-1, experts // size]], {}),
        Node(f"{name}_experts", MOE_EXPERTS, [_ref(f"{name}_tokens_flat"), _ref(f"{name}_weights_flat"), gate_up,
                                              down, top_k, experts], expert_function),
        Node(f"{name}_partial", "aten.reshape.default", [_ref(f"{name}_experts"), [size, -1, hidden_size]], {}),
        Node(f"{name}_combine", ALL_TO_ALL, [_ref(f"{name}_partial"), size], {}),
        Node(f"{name}_mine", "aten.sum.dim_IntList", [_ref(f"{name}_combine"), [0]], {}),
        Node(f"{name}_gathered", ALL_GATHER, [_ref(f"{name}_mine"), 0, size], {}),
        Node(f"{name}_out", "aten.slice.Tensor", [_ref(f"{name}_gathered"), 0, 0, tokens], {}),
    ]


def row_parallel_experts(graph: Graph, cuts: dict[str, str]) -> set[str]:
    """``npu.moe`` nodes whose down weight (read directly or through a view) is cut by input features: each rank
    holds a slice of every expert's intermediate size and its sum is partial (an all-reduce follows)."""
    views = {node.name: _ref_name(node.args[0]) for node in graph.nodes if node.op in WEIGHT_VIEWS}
    found = set()
    for node in graph.nodes:
        if node.op == MOE:
            down = _ref_name(argument(node, "down"))
            if cuts.get(views.get(down, down)) == "rowwise":
                found.add(node.name)
    return found


def experts_per_layer(graph: Graph, node: Node) -> int:
    """E of an ``npu.moe`` node: the width of its router logits (its weights may be read through a view)."""
    logits = _ref_name(argument(node, "router_logits"))
    shapes = {spec.name: spec.shape for spec in graph.inputs} | {n.name: n.meta.get("shape") for n in graph.nodes}
    return shapes[logits][-1]
