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
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from optimum_npu.schema_checks import (  # noqa: F401  (INPUT_KINDS, GraphFormatError and the checks re-exported)
    _DTYPES, _LAYOUTS, _MEMORY_FORMATS, INPUT_KINDS, GraphFormatError, check_document, check_graph_name,
    check_op_name, validate_graph)
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


#: Collective operators the tensor-parallel pass inserts and the devices perform.
ALL_REDUCE = "npu.all_reduce.default"
ALL_GATHER = "npu.all_gather.default"
#: Expert parallelism: token dispatch to the ranks holding the experts, and the all-to-all sending results back.
MOE_DISPATCH = "npu.moe_dispatch.default"
ALL_TO_ALL = "npu.all_to_all.default"

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
        check_document(doc, what)
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
        validate_graph(self)


def ref_name(value: Any) -> str | None:
    """The graph value an encoded argument names when it is a reference (``{"ref": name}``), else None."""
    return value["ref"] if isinstance(value, dict) and isinstance(value.get("ref"), str) else None


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
