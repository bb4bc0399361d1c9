"""The compile-cache key: a sha256 over everything that determines a compiled artifact's bytes.

``key = sha256(canonical JSON of {...})`` where the JSON object holds (see ``docs/hub.md``):

==================  =====================================================================
``key_version``     version of this scheme (bumped when the recipe changes)
``family``          model family (``decoder``...) and ``architecture`` (HF class name)
``weights``         sha256 over the state dict: for each tensor in name order, its name,
                    dtype, shape and raw bytes
``config``          the HF config as a dict, without private ``_*`` keys and
                    ``transformers_version`` (so the checkpoint's path does not matter)
``generation``      the generation config dict (same exclusions), or null
``npu_config``      the resolved compile configuration (every field)
``npu_spec``        the target NPU spec (every field: a custom JSON spec is hashed by content)
``files``           sha256 of each extra file shipped in the artifact (tokenizer files), by name
``versions``        optimum-npu, artifact format, torch and transformers versions, and a sha256
                    of optimum-npu's own ``.py`` files (an edited or patched install never
                    reuses artifacts compiled by other code)
==================  =====================================================================

The JSON is serialised with sorted keys and no whitespace, so the key is stable across
processes and machines.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import transformers

from optimum_npu.compile.artifact import sha256_file
from optimum_npu.hub.canonical import _public_dict, canonical_json  # noqa: F401  (canonical_json re-exported)
from optimum_npu.schema import ARTIFACT_FORMAT_VERSION
from optimum_npu.version import __version__

#: Version of the key recipe above. Bump it whenever an input is added, removed or hashed differently.
KEY_VERSION = 1


@dataclass(frozen=True)
class CacheKey:
    """A compile-cache key, the (hashed) inputs it was computed from, and optionally ``verify_hit``:
    a check that a cached artifact is the compile of those inputs (raises otherwise; see
    ``compile_with_cache``)."""

    key: str
    inputs: dict[str, Any]
    verify_hit: Callable[[Path], Any] | None = field(default=None, compare=False, repr=False)


@functools.lru_cache(maxsize=1)
def library_source_digest() -> str:
    """sha256 over the relative path and content of every ``.py`` file of the optimum_npu package."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def weights_digest(state_dict: dict[str, torch.Tensor], dtype: torch.dtype | None = None) -> str:
    """sha256 over ``(name, dtype, shape, raw bytes)`` of every tensor, in name order.

    ``dtype``: floating-point tensors are hashed as converted to it (one tensor at a time).
    """
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        header = json.dumps([name, str(tensor.dtype).removeprefix("torch."), list(tensor.shape)])
        digest.update(header.encode() + b"\0")
        raw = tensor.contiguous().reshape(-1).view(torch.uint8)
        digest.update(memoryview(raw.cpu().numpy()))
    return digest.hexdigest()


def compute_cache_key(*, family: str, architecture: str, state_dict: dict[str, torch.Tensor], config: Any,
                      generation_config: Any, npu_config: dict[str, Any], npu_spec: dict[str, Any],
                      extra_files: Iterable[Path] = (), weights_dtype: torch.dtype | None = None) -> CacheKey:
    """The cache key of compiling one model with one configuration for one target.

    Args:
        family: model family, e.g. ``"decoder"``.
        architecture: HF architecture name, e.g. ``"LlamaForCausalLM"``.
        state_dict: the weights as they will be compiled.
        config: the HF ``PretrainedConfig`` (or a dict).
        generation_config: the HF ``GenerationConfig`` (or a dict, or None).
        npu_config: the resolved compile configuration as a dict.
        npu_spec: the target spec as a dict (``NPUSpec.to_dict()``).
        extra_files: files copied into the artifact (tokenizer files); missing paths are skipped.
        weights_dtype: the compile dtype; floating-point weights are hashed as converted to it.

    Returns:
        ``CacheKey(key, inputs)``: the hex key and the JSON object it hashes.
    """
    files = {Path(p).name: sha256_file(Path(p)) for p in extra_files if Path(p).is_file()}
    inputs = {
        "key_version": KEY_VERSION,
        "family": family,
        "architecture": architecture,
        "weights": weights_digest(state_dict, weights_dtype),
        "config": _public_dict(config),
        "generation": _public_dict(generation_config),
        "npu_config": npu_config,
        "npu_spec": npu_spec,
        "files": files,
        "versions": {"optimum_npu": __version__, "artifact_format": ARTIFACT_FORMAT_VERSION,
                     "torch": torch.__version__, "transformers": transformers.__version__,
                     "optimum_npu_source": library_source_digest()},
    }
    inputs = json.loads(canonical_json(inputs))  # what is hashed is exactly what is recorded
    return CacheKey(hashlib.sha256(canonical_json(inputs).encode()).hexdigest(), inputs)
