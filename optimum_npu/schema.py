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

#: Version of the on-disk format. Bump on any incompatible change of the files below.
ARTIFACT_FORMAT_VERSION = 1

NPU_CONFIG_FILE = "npu_config.json"
MANIFEST_FILE = "npu_manifest.json"
GRAPH_DIR = "graphs"
GRAPH_SUFFIX = ".graph.json"
WEIGHTS_FILE = "model.safetensors"


def weights_file(rank: int = 0, tensor_parallel_size: int = 1) -> str:
    """The weights file of one device shard (``model.safetensors`` without tensor parallelism)."""
    if tensor_parallel_size == 1:
        return WEIGHTS_FILE
    return f"model-tp{rank}-of-{tensor_parallel_size}.safetensors"

#: Operator namespaces a graph may reference. ``npu`` holds the device's own kernels.
ALLOWED_OP_NAMESPACES = ("aten", "npu")
#: Python-level builtins that appear in exported graphs, by their stable name.
ALLOWED_BUILTINS = ("getitem",)

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
    def from_json(cls, text: str) -> "Graph":
        try:
            doc = json.loads(text)
            version = doc["format_version"]
            if version != ARTIFACT_FORMAT_VERSION:
                raise GraphFormatError(
                    f"graph format version {version} is not supported by this optimum-npu "
                    f"(it reads version {ARTIFACT_FORMAT_VERSION}); recompile the model with "
                    "`optimum-npu export` or install the optimum-npu release that wrote it"
                )
            inputs = tuple(TensorSpec(s["name"], s["kind"], tuple(s["shape"]), s["dtype"], s.get("source"))
                           for s in doc["inputs"])
            nodes = tuple(Node(n["name"], n["op"], n["args"], n["kwargs"], n.get("meta", {}))
                          for n in doc["nodes"])
            graph = cls(doc["name"], inputs, nodes, tuple(doc["outputs"]),
                        tuple(doc.get("mutated_inputs", ())), doc.get("attributes", {}))
        except GraphFormatError:
            raise
        except (KeyError, TypeError, ValueError) as err:
            raise GraphFormatError(f"graph file is not a valid optimum-npu graph: {err!r}") from err
        graph.validate()
        return graph

    def validate(self) -> None:
        """Checks names are defined before use, ops are allow-listed and kinds are known."""
        defined = set()
        for spec in self.inputs:
            if spec.kind not in INPUT_KINDS:
                raise GraphFormatError(f"graph {self.name!r}: input {spec.name!r} has unknown kind {spec.kind!r}")
            dtype_from_name(spec.dtype)
            defined.add(spec.name)
        for node in self.nodes:
            check_op_name(node.op)
            for ref in iter_refs(node.args) + iter_refs(node.kwargs):
                if ref not in defined:
                    raise GraphFormatError(f"graph {self.name!r}: node {node.name!r} uses undefined value {ref!r}")
            defined.add(node.name)
        for out in self.outputs:
            if out not in defined:
                raise GraphFormatError(f"graph {self.name!r}: output {out!r} is not defined")


def check_op_name(op: str) -> None:
    namespace = op.split(".", 1)[0]
    if op in ALLOWED_BUILTINS:
        return
    if namespace not in ALLOWED_OP_NAMESPACES or op.count(".") != 2:
        raise GraphFormatError(
            f"operator {op!r} is not allowed in a graph; allowed: '<namespace>.<op>.<overload>' with namespace in "
            f"{ALLOWED_OP_NAMESPACES}, or one of {ALLOWED_BUILTINS}"
        )


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
