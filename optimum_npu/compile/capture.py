"""Capture a module with ``torch.export`` and convert it into the declarative graph schema."""

from __future__ import annotations

import contextlib
import copy
import operator
from typing import Any, Iterator

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind

from optimum_npu.schema import Graph, GraphFormatError, Node, TensorSpec, dtype_name, encode_arg, iter_refs

_WEIGHT_KINDS = (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR)


@contextlib.contextmanager
def capture_form(module: torch.nn.Module, dtype: torch.dtype) -> Iterator[torch.nn.Module]:
    """``module`` in eval mode with its floating-point tensors in ``dtype``, for tracing, leaving the
    caller's module as it was: a converted copy when any floating-point parameter or buffer has another
    dtype (the caller's stays in its own), and the train/eval flags restored on exit.

    Compiling never changes the caller's model (dtype, parameters, buffers, modules, mode).
    """
    tensors = list(module.parameters()) + list(module.buffers())
    if any(t.is_floating_point() and t.dtype != dtype for t in tensors):
        yield copy.deepcopy(module).to(dtype).eval()
        return
    modes = {sub: sub.training for sub in module.modules()}
    try:
        yield module.eval()
    finally:
        for sub, training in modes.items():
            sub.training = training


def capture(
    module: torch.nn.Module,
    example_args: tuple,
    name: str,
    user_input_names: list[str],
    user_input_kinds: list[str],
    weight_prefix: str = "",
    attributes: dict[str, Any] | None = None,
) -> tuple[Graph, dict[str, torch.Tensor]]:
    """Exports ``module(*example_args)`` with static shapes and converts it.

    Args:
        module: the static-shape wrapper.
        example_args: example inputs; their shapes become the graph's shapes.
        name: graph name (``prefill``, ``decoder_batch_4``, ...).
        user_input_names / user_input_kinds: names and kinds (``input``/``kv_cache``) given
            to the flattened user inputs, in order.
        weight_prefix: prefix stripped from parameter names so they match the checkpoint.

    Returns:
        The graph and the tensors its ``weight`` inputs refer to, keyed by weight name.
    """
    with torch.no_grad():
        program = torch.export.export(module, example_args, strict=False)
    out_of_place(program.graph)
    return to_graph(program, name, user_input_names, user_input_kinds, weight_prefix, attributes or {})


#: In-place ops an HF module may apply to its own intermediates (ResNet's ``hidden += residual``) and their
#: out-of-place overloads.
_OUT_OF_PLACE = {torch.ops.aten.add_.Tensor: torch.ops.aten.add.Tensor}


def out_of_place(graph: torch.fx.Graph) -> None:
    """Rewrites an in-place op whose target is an intermediate nothing reads afterwards into its
    out-of-place overload (same values: its users read its result). Any other in-place op stays, and
    the operator allow-list refuses it: graphs never mutate their inputs or weights."""
    order = {node: i for i, node in enumerate(graph.nodes)}
    for node in graph.nodes:
        target = node.args[0] if node.op == "call_function" and node.args else None
        if node.target in _OUT_OF_PLACE and isinstance(target, torch.fx.Node) and target.op == "call_function" \
                and all(order[user] <= order[node] for user in target.users):
            node.target = _OUT_OF_PLACE[node.target]


def to_graph(program: ExportedProgram, name: str, user_input_names: list[str], user_input_kinds: list[str],
             weight_prefix: str, attributes: dict[str, Any]) -> tuple[Graph, dict[str, torch.Tensor]]:
    signature = program.graph_signature
    state = {**program.state_dict, **program.constants}
    names: dict[torch.fx.Node, str] = {}
    inputs: list[TensorSpec] = []
    weights: dict[str, torch.Tensor] = {}
    user_index = 0
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder"]
    for node, spec in zip(placeholders, signature.input_specs, strict=True):
        fake = node.meta["val"]
        if spec.kind in _WEIGHT_KINDS:
            source = spec.target.removeprefix(weight_prefix)
            if spec.kind == InputKind.CONSTANT_TENSOR:
                source = f"constants.{name}.{spec.target}"
            weights[source] = state[spec.target].detach()
            names[node] = node.name
            inputs.append(TensorSpec(node.name, "weight", tuple(fake.shape), dtype_name(fake.dtype), source))
        elif spec.kind == InputKind.USER_INPUT:
            input_name = user_input_names[user_index]
            names[node] = input_name
            inputs.append(TensorSpec(input_name, user_input_kinds[user_index], tuple(fake.shape),
                                     dtype_name(fake.dtype)))
            user_index += 1
        else:
            raise GraphFormatError(f"graph {name!r}: unsupported input kind {spec.kind} for {node.name}")
    mutated = [spec for spec in signature.output_specs if spec.kind.name != "USER_OUTPUT"]
    if mutated:
        raise GraphFormatError(f"graph {name!r}: functionalised input mutations {mutated} are not supported; "
                               "update caches through an npu kernel that mutates in place")

    nodes: list[Node] = []
    outputs: list[str] = []
    for node in program.graph.nodes:
        if node.op == "call_function":
            names[node] = node.name
            nodes.append(Node(node.name, _op_name(node.target),
                              encode_arg(list(node.args), names.get),
                              {k: encode_arg(v, names.get) for k, v in node.kwargs.items()},
                              _meta(node.meta.get("val"))))
        elif node.op == "output":
            outputs = [names[out] for out in node.args[0]]
        elif node.op != "placeholder":
            raise GraphFormatError(f"graph {name!r}: node {node.name} of kind {node.op} cannot be stored")
    # weights the graph never reads (e.g. a vision tower beside the captured language model) are dropped
    used = {ref for node in nodes for ref in iter_refs(node.args) + iter_refs(node.kwargs)} | set(outputs)
    unused = {spec.source for spec in inputs if spec.kind == "weight" and spec.name not in used}
    inputs = [spec for spec in inputs if not (spec.kind == "weight" and spec.name not in used)]
    weights = {source: tensor for source, tensor in weights.items() if source not in unused}
    mutated_inputs = tuple(spec.name for spec in inputs if spec.kind == "kv_cache")
    graph = Graph(name, tuple(inputs), tuple(nodes), tuple(outputs), mutated_inputs, attributes)
    graph.validate()
    return graph, weights


def _op_name(target: Any) -> str:
    if target is operator.getitem:
        return "getitem"
    if isinstance(target, torch._ops.OpOverload):
        return str(target)
    raise GraphFormatError(f"operator {target!r} cannot be stored in an optimum-npu graph")


def _meta(value: Any) -> dict[str, Any]:
    if isinstance(value, torch.Tensor):
        return {"shape": list(value.shape), "dtype": dtype_name(value.dtype)}
    if isinstance(value, (list, tuple)):
        return {"tuple": [_meta(v) for v in value]}
    return {}
