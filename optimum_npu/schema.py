"""The artifact contract between the compiler (`compile/`) and the simulated NPU (`device/`).

A compiled graph is stored as human-readable JSON: a list of typed inputs, a list of
ATen-level nodes in execution order, and the names of the outputs. Nothing in it is
executable code: every node names an operator overload (``aten.mm.default``) that the
device resolves against an allow-list of namespaces, so a graph pulled from the Hub
can be inspected and loaded safely. Weights never live in a graph file: a graph input
of kind ``weight`` names a tensor in the artifact's safetensors file(s).

Argument encoding (``encode_arg`` / ``decode_arg``):

- JSON scalars (int, float, bool, null) and strings are themselves;
- ``{"ref": name}`` is the value of an earlier node or graph input;
- ``{"dtype": "float32"}``, ``{"layout": ...}``, ``{"memory_format": ...}``,
  ``{"device": ...}`` are torch enums;
- ``{"float": "inf"|"-inf"|"nan"}`` are non-finite floats;
- lists are lists.
"""

from __future__ import annotations

import json
import keyword
import math
import re
from dataclasses import dataclass, field
from typing import Any

import torch

from optimum_npu.schema_ops import ALLOWED_OPS, ALLOWED_STRINGS, OP_LIST_VERSION  # noqa: F401  (re-exported)
from optimum_npu.untrusted import MAX_GRAPH_BYTES, parse_json

#: Version of the on-disk format. Bump on any incompatible change of the files below.
ARTIFACT_FORMAT_VERSION = 2   # 2: graphs describe their bucket in attributes (kind, batch, tokens)

NPU_CONFIG_FILE = "npu_config.json"
MANIFEST_FILE = "npu_manifest.json"
GRAPH_DIR = "graphs"
GRAPH_SUFFIX = ".graph.json"
WEIGHTS_FILE = "model.safetensors"


def bucket_graph_name(bucket: int) -> str:
    """The graph of a visual encoder's bucket of ``bucket`` patches (``visual_<S>``)."""
    return f"visual_{bucket}"


def weights_file(rank: int = 0, tensor_parallel_size: int = 1) -> str:
    """The weights file of one device shard (``model.safetensors`` without tensor parallelism)."""
    if tensor_parallel_size == 1:
        return WEIGHTS_FILE
    return f"model-tp{rank}-of-{tensor_parallel_size}.safetensors"

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

#: Collective operators the tensor-parallel pass inserts and the devices perform.
ALL_REDUCE = "npu.all_reduce.default"
ALL_GATHER = "npu.all_gather.default"

_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32,
    torch.int16, torch.int8, torch.uint8, torch.bool,
)}
_LAYOUTS = {"strided": torch.strided}
_MEMORY_FORMATS = {"contiguous_format": torch.contiguous_format, "preserve_format": torch.preserve_format}
_NON_FINITE = {"inf", "-inf", "nan"}


class GraphFormatError(ValueError):
    """A graph file does not follow the schema (corrupt, hand-edited or from another version)."""


def dtype_name(dtype: torch.dtype) -> str:
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise GraphFormatError(f"dtype {dtype} cannot be stored in a graph; supported: {sorted(_DTYPES)}")
    return name


def dtype_from_name(name: str) -> torch.dtype:
    try:
        return _DTYPES[name]
    except KeyError:
        raise GraphFormatError(f"unknown dtype {name!r} in graph; supported: {sorted(_DTYPES)}") from None


@dataclass(frozen=True)
class TensorSpec:
    """A graph input: its role, shape and dtype. ``source`` is the weight name for ``weight`` inputs."""

    name: str
    kind: str
    shape: tuple[int, ...]
    dtype: str
    source: str | None = None

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * torch.empty((), dtype=dtype_from_name(self.dtype)).element_size()


@dataclass(frozen=True)
class Node:
    """One operator call. ``meta`` holds the output's static shape(s)/dtype(s) for the cost model."""

    name: str
    op: str
    args: list[Any]
    kwargs: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Graph:
    """A static-shape compiled graph: inputs, nodes in execution order, and output node names.

    ``mutated_inputs`` lists the inputs (KV cache tensors) that nodes update in place.
    """

    name: str
    inputs: tuple[TensorSpec, ...]
    nodes: tuple[Node, ...]
    outputs: tuple[str, ...]
    mutated_inputs: tuple[str, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)

    def inputs_of_kind(self, kind: str) -> list[TensorSpec]:
        return [spec for spec in self.inputs if spec.kind == kind]

    def to_json(self) -> str:
        doc = {
            "format_version": ARTIFACT_FORMAT_VERSION,
            "name": self.name,
            "attributes": self.attributes,
            "inputs": [vars(spec) | {"shape": list(spec.shape)} for spec in self.inputs],
            "nodes": [{"name": n.name, "op": n.op, "args": n.args, "kwargs": n.kwargs, "meta": n.meta}
                      for n in self.nodes],
            "outputs": list(self.outputs),
            "mutated_inputs": list(self.mutated_inputs),
        }
        return json.dumps(doc, indent=1)

    @classmethod
    def from_json(cls, text: str | bytes, what: str = "graph file") -> "Graph":
        """Parses and validates a graph document (untrusted: see ``validate``)."""
        doc = parse_json(text, what=what, max_bytes=MAX_GRAPH_BYTES, error=GraphFormatError)
        if not isinstance(doc, dict) or "format_version" not in doc:
            raise GraphFormatError(f"{what} is not a valid optimum-npu graph (no format_version); recompile the model")
        version = doc["format_version"]
        if version != ARTIFACT_FORMAT_VERSION:
            raise GraphFormatError(
                f"graph format version {version!r} is not supported by this optimum-npu "
                f"(it reads version {ARTIFACT_FORMAT_VERSION}); recompile the model with "
                "`optimum-npu export` or install the optimum-npu release that wrote it"
            )
        _check_document(doc, what)
        inputs = tuple(TensorSpec(s["name"], s["kind"], tuple(s["shape"]), s["dtype"], s.get("source"))
                       for s in doc["inputs"])
        nodes = tuple(Node(n["name"], n["op"], n["args"], n["kwargs"], n.get("meta", {})) for n in doc["nodes"])
        graph = cls(doc["name"], inputs, nodes, tuple(doc["outputs"]), tuple(doc.get("mutated_inputs", ())),
                    doc.get("attributes", {}))
        try:
            graph.validate()
        except GraphFormatError as err:
            if "recompile" in str(err):
                raise
            raise GraphFormatError(f"{what}: {err}; it was not written by this optimum-npu (or is damaged): "
                                   "re-download or recompile the model") from None
        return graph

    def validate(self) -> None:
        """Checks every string and value of the graph before anything is built from it.

        Names are identifiers (not keywords), defined once and before use; every operator is
        in the exact allow-list and its keyword names in that operator's schema; argument values
        are numbers, booleans, None, allow-listed strings, enums, lists of those and references;
        shapes and dtypes are well-formed and bounded.
        """
        where = f"graph {self.name!r}"
        check_graph_name(self.name)
        if len(self.nodes) > MAX_GRAPH_NODES or len(self.inputs) > MAX_GRAPH_INPUTS:
            raise GraphFormatError(f"{where} has {len(self.nodes)} nodes and {len(self.inputs)} inputs; the limits are "
                                   f"{MAX_GRAPH_NODES} and {MAX_GRAPH_INPUTS}: it was not written by optimum-npu")
        defined: set[str] = set()
        for spec in self.inputs:
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
        for node in self.nodes:
            _check_node(node, defined, where)
            _define(defined, node.name, where)
        if not self.outputs:
            raise GraphFormatError(f"{where} has no outputs")
        for out in self.outputs:
            if not isinstance(out, str) or out not in defined:
                raise GraphFormatError(f"{where}: output {out!r} is not defined")
        caches = {spec.name for spec in self.inputs if spec.kind == "kv_cache"}
        for name in self.mutated_inputs:
            if not isinstance(name, str) or name not in caches:
                raise GraphFormatError(f"{where}: mutated input {name!r} is not a kv_cache input")
        _check_attributes(self.attributes, where)


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


def _check_node(node: Node, defined: set[str], where: str) -> None:
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


def _check_document(doc: dict, what: str) -> None:
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


def iter_refs(value: Any) -> list[str]:
    """Names of the graph values an encoded argument refers to."""
    if isinstance(value, dict):
        if "ref" in value:
            return [value["ref"]]
        return [r for v in value.values() for r in iter_refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in iter_refs(v)]
    return []


def encode_arg(value: Any, name_of) -> Any:
    """Encodes one argument of an exported node; ``name_of(node)`` names graph values."""
    if isinstance(value, (list, tuple)):
        return [encode_arg(v, name_of) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return {"float": str(value)}
    if isinstance(value, torch.dtype):
        return {"dtype": dtype_name(value)}
    if isinstance(value, torch.layout):
        return {"layout": str(value).removeprefix("torch.")}
    if isinstance(value, torch.memory_format):
        return {"memory_format": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {"device": "cpu"}
    ref = name_of(value)
    if ref is None:
        raise GraphFormatError(f"cannot encode graph argument {value!r} of type {type(value).__name__}")
    return {"ref": ref}


def decode_arg(value: Any, lookup) -> Any:
    """Inverse of ``encode_arg``; ``lookup(name)`` returns the runtime value of a reference."""
    if isinstance(value, list):
        return [decode_arg(v, lookup) for v in value]
    if not isinstance(value, dict):
        return value
    if "ref" in value:
        return lookup(value["ref"])
    if "dtype" in value:
        return dtype_from_name(value["dtype"])
    if "float" in value:
        return float(value["float"])
    if "layout" in value:
        return _LAYOUTS[value["layout"]]
    if "memory_format" in value:
        return _MEMORY_FORMATS[value["memory_format"]]
    if "device" in value:
        return torch.device("cpu")
    raise GraphFormatError(f"unknown encoded argument {value!r}")
