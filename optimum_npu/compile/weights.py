"""Weights in safetensors, stored once however many graphs use them.

Tensors that share storage (tied embeddings) are written once; the other names are
recorded as aliases in the file's metadata and restored on load.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

ALIASES_KEY = "optimum_npu.aliases"


def save_weights(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    owner_of_storage: dict[tuple[int, tuple, tuple], str] = {}
    for name in sorted(tensors):
        tensor = tensors[name]
        key = (tensor.untyped_storage().data_ptr(), tuple(tensor.shape), tuple(tensor.stride()))
        if key in owner_of_storage:
            aliases[name] = owner_of_storage[key]
            continue
        owner_of_storage[key] = name
        unique[name] = tensor.detach().contiguous()
    save_file(unique, str(path), metadata={ALIASES_KEY: json.dumps(aliases)})


def read_aliases(metadata: dict[str, str] | None, names: set[str], path: Path) -> dict[str, str]:
    """The validated alias -> stored-name map of a weights file's metadata (untrusted JSON)."""
    from optimum_npu.compile.artifact import ArtifactError
    from optimum_npu.untrusted import parse_json

    aliases = parse_json((metadata or {}).get(ALIASES_KEY, "{}"), what=f"{path} aliases metadata",
                         error=ArtifactError)
    if not isinstance(aliases, dict) or not all(isinstance(k, str) and v in names for k, v in aliases.items()):
        raise ArtifactError(f"{path}: the {ALIASES_KEY} metadata must map names to stored tensors; re-download "
                            "or recompile the model")
    return aliases


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as handle:
        for name in handle.keys():
            tensors[name] = handle.get_tensor(name)
        aliases = read_aliases(handle.metadata(), set(tensors), Path(path))
    for alias, target in aliases.items():
        tensors[alias] = tensors[target]
    return tensors


#: Bytes per element of the dtypes safetensors files name in their header.
_SAFETENSORS_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                         "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}


def stored_weight_bytes(path: Path) -> int:
    """Bytes of the tensors a safetensors file holds, from its header alone (nothing is loaded)."""
    from optimum_npu.compile.artifact import ArtifactError

    total = 0
    try:
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                piece = handle.get_slice(name)
                count = 1
                for dim in piece.get_shape():
                    count *= dim
                total += count * _SAFETENSORS_ITEMSIZE.get(piece.get_dtype(), 8)
    except Exception as err:  # safetensors raises its own error types for a corrupt header
        raise ArtifactError(f"{path} is not a readable safetensors file ({str(err)[:200]}); re-download or "
                            "recompile the model") from None
    return total
