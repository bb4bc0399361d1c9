"""Validation of an untrusted graph document: every name, operator, argument, shape and bound.

``schema.Graph.from_json`` runs ``check_document`` on the parsed JSON and ``validate_graph`` on the
graph built from it; nothing else is done with a graph before both pass (see ``docs/security.md``).
"""

from __future__ import annotations

import keyword
import math
import re
from typing import Any

import torch

from optimum_npu.schema_ops import ALLOWED_OPS, ALLOWED_STRINGS, OP_LIST_VERSION

#: Bounds on a graph document, checked before any value is built from it.
MAX_GRAPH_NODES = 200_000
MAX_GRAPH_INPUTS = 20_000
MAX_LIST_LENGTH = 4_096
MAX_TENSOR_RANK = 8
MAX_DIMENSION = 1 << 40
MAX_NAME_LENGTH = 256
MAX_SOURCE_LENGTH = 1_024
_INT64 = (-(1 << 63), (1 << 63) - 1)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
#: Graph names become file names (``graphs/<name>.graph.json``): letters, digits and ``_`` only.
_GRAPH_NAME = re.compile(r"[A-Za-z0-9_]{1,128}\Z")
_META_KEYS = {"shape", "dtype", "tuple", "placement"}
_GRAPH_KEYS = {"format_version", "name", "attributes", "inputs", "nodes", "outputs", "mutated_inputs"}

INPUT_KINDS = ("weight", "input", "kv_cache")

_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32,
    torch.int16, torch.int8, torch.uint8, torch.bool, torch.float8_e4m3fn,
)}
_LAYOUTS = {"strided": torch.strided}
_MEMORY_FORMATS = {"contiguous_format": torch.contiguous_format, "preserve_format": torch.preserve_format}
_NON_FINITE = {"inf", "-inf", "nan"}


class GraphFormatError(ValueError):
    """A graph file does not follow the schema (corrupt, hand-edited or from another version)."""




def validate_graph(graph: Any) -> None:
    """Checks every string and value of ``graph`` (a ``schema.Graph``) before anything is built from it (``Graph.validate``)."""
    where = f"graph {graph.name!r}"
    check_graph_name(graph.name)
    if len(graph.nodes) > MAX_GRAPH_NODES or len(graph.inputs) > MAX_GRAPH_INPUTS:
        raise GraphFormatError(f"{where} has {len(graph.nodes)} nodes and {len(graph.inputs)} inputs; the limits are "
                               f"{MAX_GRAPH_NODES} and {MAX_GRAPH_INPUTS}: it was not written by optimum-npu")
    defined: set[str] = set()
    for spec in graph.inputs:
        _check_name(spec.name, f"{where}: input name")
        if spec.kind not in INPUT_KINDS:
            raise GraphFormatError(f"{where}: input {spec.name!r} has unknown kind {spec.kind!r}; "
                                   f"allowed: {list(INPUT_KINDS)}")
        _check_shape(spec.shape, f"{where}: input {spec.name!r}")
        _check_dtype(spec.dtype, f"{where}: input {spec.name!r}")
        if spec.kind == "weight":
            if not isinstance(spec.source, str) or not 0 < len(spec.source) <= MAX_SOURCE_LENGTH:
                raise GraphFormatError(f"{where}: weight input {spec.name!r} needs a source tensor name "
                                       f"(a string of 1..{MAX_SOURCE_LENGTH} characters)")
        elif spec.source is not None:
            raise GraphFormatError(f"{where}: input {spec.name!r} of kind {spec.kind!r} cannot have a source")
        _define(defined, spec.name, where)
    for node in graph.nodes:
        _check_node(node, defined, where)
        _define(defined, node.name, where)
    if not graph.outputs:
        raise GraphFormatError(f"{where} has no outputs")
    for out in graph.outputs:
        if not isinstance(out, str) or out not in defined:
            raise GraphFormatError(f"{where}: output {out!r} is not defined")
    caches = {spec.name for spec in graph.inputs if spec.kind == "kv_cache"}
    for name in graph.mutated_inputs:
        if not isinstance(name, str) or name not in caches:
            raise GraphFormatError(f"{where}: mutated input {name!r} is not a kv_cache input")
    _check_attributes(graph.attributes, where)


def check_graph_name(name: Any) -> None:
    """A graph name is also a file name: letters, digits and underscores, at most 128 characters."""
    if not isinstance(name, str) or not _GRAPH_NAME.match(name):
        raise GraphFormatError(f"graph name {name!r} is invalid: graph names are 1..128 letters, digits or "
                               "underscores; the artifact was not written by optimum-npu")


def check_op_name(op: Any) -> None:
    """The operator must be in the exact allow-list (``schema_ops.ALLOWED_OPS``)."""
    if not isinstance(op, str) or op not in ALLOWED_OPS:
        raise GraphFormatError(
            f"operator {op!r} is not allowed in a graph: it is not in the operator allow-list of this optimum-npu "
            f"(version {OP_LIST_VERSION}, {len(ALLOWED_OPS)} operators, namespaces ('aten', 'npu')). A graph "
            "from another release needs that release, or recompile the model"
        )


def _define(defined: set[str], name: str, where: str) -> None:
    if name in defined:
        raise GraphFormatError(f"{where}: value {name!r} is defined twice")
    defined.add(name)


def _check_name(name: Any, what: str) -> None:
    if (not isinstance(name, str) or len(name) > MAX_NAME_LENGTH or not _IDENTIFIER.match(name)
            or keyword.iskeyword(name) or name.startswith("__")):
        raise GraphFormatError(f"{what} {name!r} is invalid: names are identifiers ([A-Za-z_][A-Za-z0-9_]*, at most "
                               f"{MAX_NAME_LENGTH} characters, no keyword, no leading '__')")


def _check_dtype(name: Any, what: str) -> None:
    if not isinstance(name, str) or name not in _DTYPES:
        raise GraphFormatError(f"{what}: dtype {name!r} is not supported; supported: {sorted(_DTYPES)}")


def _check_shape(shape: Any, what: str) -> None:
    if (not isinstance(shape, (list, tuple)) or len(shape) > MAX_TENSOR_RANK
            or any(not _is_int(d) or not 0 <= d <= MAX_DIMENSION for d in shape)
            or math.prod(shape) > MAX_DIMENSION):
        raise GraphFormatError(f"{what}: shape {shape!r} is invalid: at most {MAX_TENSOR_RANK} non-negative integer "
                               f"dimensions and {MAX_DIMENSION} elements")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_node(node: Any, defined: set[str], where: str) -> None:
    _check_name(node.name, f"{where}: node name")
    check_op_name(node.op)
    what = f"{where}: node {node.name!r} ({node.op})"
    if not isinstance(node.args, list) or not isinstance(node.kwargs, dict):
        raise GraphFormatError(f"{what}: args must be a list and kwargs an object")
    allowed = ALLOWED_OPS[node.op]
    for key in node.kwargs:
        if key not in allowed:
            raise GraphFormatError(f"{what}: keyword argument {key!r} is not an argument of this operator "
                                   f"(its keyword arguments: {sorted(allowed)})")
    if len(node.args) > MAX_LIST_LENGTH:
        raise GraphFormatError(f"{what}: {len(node.args)} arguments, over the limit of {MAX_LIST_LENGTH}")
    for value in [*node.args, *node.kwargs.values()]:
        _check_value(value, defined, what)
    _check_meta(node.meta, what)


def _check_value(value: Any, defined: set[str], what: str) -> None:
    """An encoded argument: JSON scalar, allowed string, enum, non-finite float, reference, or a list of those."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise GraphFormatError(f"{what}: integer argument {value} is outside the int64 range")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise GraphFormatError(f"{what}: non-finite float {value!r} must be encoded as {{\"float\": ...}}")
        return
    if isinstance(value, str):
        if value not in ALLOWED_STRINGS:
            raise GraphFormatError(f"{what}: string argument {value[:64]!r} is not allowed; allowed strings: "
                                   f"{sorted(ALLOWED_STRINGS)}")
        return
    if isinstance(value, list):
        if len(value) > MAX_LIST_LENGTH:
            raise GraphFormatError(f"{what}: list argument of {len(value)} items, over the limit of {MAX_LIST_LENGTH}")
        for item in value:
            _check_value(item, defined, what)
        return
    if isinstance(value, dict) and len(value) == 1:
        (key, item), = value.items()
        allowed = {"ref": defined, "dtype": _DTYPES, "layout": _LAYOUTS, "memory_format": _MEMORY_FORMATS,
                   "device": ("cpu",), "float": _NON_FINITE}.get(key)
        if allowed is not None and isinstance(item, str) and item in allowed:
            return
        if key == "ref":
            raise GraphFormatError(f"{what} uses undefined value {item!r}")
    raise GraphFormatError(f"{what}: argument {str(value)[:80]} is not a valid encoded value (numbers, booleans, "
                           "null, allowed strings, lists, {\"ref\"|\"dtype\"|\"layout\"|\"memory_format\"|"
                           "\"device\"|\"float\": name})")


def _check_meta(meta: Any, what: str, depth: int = 0) -> None:
    """Node metadata read by the cost model: shape/dtype of the output, a tuple of those, a placement."""
    if not isinstance(meta, dict) or set(meta) - _META_KEYS or depth > 2:
        raise GraphFormatError(f"{what}: meta must be an object with keys among {sorted(_META_KEYS)}")
    if ("shape" in meta) != ("dtype" in meta):
        raise GraphFormatError(f"{what}: meta needs both shape and dtype, or neither")
    if "shape" in meta:
        _check_shape(meta["shape"], f"{what}: meta")
        _check_dtype(meta["dtype"], f"{what}: meta")
    if "tuple" in meta:
        items = meta["tuple"]
        if not isinstance(items, list) or len(items) > MAX_LIST_LENGTH:
            raise GraphFormatError(f"{what}: meta tuple must be a list of at most {MAX_LIST_LENGTH} items")
        for item in items:
            _check_meta(item, what, depth + 1)
    if "placement" in meta and meta["placement"] not in ("host", "device"):
        raise GraphFormatError(f"{what}: meta placement {meta['placement']!r} must be 'host' or 'device'")


def _check_attributes(attributes: Any, where: str) -> None:
    """Bucket attributes: a flat object of names to integers, strings, booleans or lists of integers."""
    if not isinstance(attributes, dict) or len(attributes) > 64:
        raise GraphFormatError(f"{where}: attributes must be an object of at most 64 entries")
    for key, value in attributes.items():
        _check_name(key, f"{where}: attribute")
        scalar = value is None or isinstance(value, (bool, int, str)) and (not isinstance(value, str)
                                                                            or len(value) <= MAX_NAME_LENGTH)
        ints = isinstance(value, list) and len(value) <= MAX_LIST_LENGTH and all(_is_int(v) for v in value)
        if not (scalar or ints):
            raise GraphFormatError(f"{where}: attribute {key!r} must be a number, string, boolean or list of integers")


def check_document(doc: dict, what: str) -> None:
    """The top-level structure, before any object is built from it."""
    problem = None
    if set(doc) - _GRAPH_KEYS:
        problem = f"unknown keys {sorted(set(doc) - _GRAPH_KEYS)[:5]}"
    elif not all(isinstance(doc.get(k), list) for k in ("inputs", "nodes", "outputs")):
        problem = "inputs, nodes and outputs must be lists"
    elif not isinstance(doc.get("mutated_inputs", []), list) or not isinstance(doc.get("attributes", {}), dict):
        problem = "mutated_inputs must be a list and attributes an object"
    elif len(doc["nodes"]) > MAX_GRAPH_NODES or len(doc["inputs"]) > MAX_GRAPH_INPUTS:
        problem = (f"{len(doc['nodes'])} nodes / {len(doc['inputs'])} inputs, over the limits of {MAX_GRAPH_NODES} "
                   f"/ {MAX_GRAPH_INPUTS}")
    elif len(doc["outputs"]) > MAX_LIST_LENGTH or len(doc.get("mutated_inputs", [])) > MAX_LIST_LENGTH:
        problem = f"more than {MAX_LIST_LENGTH} outputs or mutated inputs"
    elif not all(isinstance(s, dict) and {"name", "kind", "shape", "dtype"} <= set(s) <= {"name", "kind", "shape",
                 "dtype", "source"} for s in doc["inputs"]):
        problem = "each input must be an object with name, kind, shape, dtype (and source for weights)"
    elif not all(isinstance(n, dict) and {"name", "op", "args", "kwargs"} <= set(n) <= {"name", "op", "args",
                 "kwargs", "meta"} for n in doc["nodes"]):
        problem = "each node must be an object with name, op, args, kwargs (and meta)"
    elif not all(isinstance(s["shape"], list) for s in doc["inputs"]):
        problem = "input shapes must be lists"
    if problem:
        raise GraphFormatError(f"{what} is not a valid optimum-npu graph: {problem}; re-download or recompile the model")
