"""The decoder family's compile-cache key and its check of a cache hit.

The key hashes what ``compile_decoder`` reads (weights in the compile dtype, configs, knobs,
target, tokenizer files shipped); the hit check compares a cached artifact with what
``compile_decoder`` would write for the model being compiled (see ``hub/cache_verify.py``).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import torch

from optimum_npu.compile.artifact import verify_artifact
from optimum_npu.device.spec import resolve_spec
from optimum_npu.hub.cache_key import CacheKey, compute_cache_key
from optimum_npu.hub.cache_verify import check_same, check_stored_documents, check_weights
from optimum_npu.models.decoder.export import TOKENIZER_FILES, graph_names, tensor_parallel_plan
from optimum_npu.models.registry import lookup_architecture


def decoder_cache_key(hf_model: Any, architecture: str, npu_config: Any, tokenizer_dir: Path | None) -> CacheKey:
    """``compute_cache_key`` for a decoder compile: weights in the compile dtype, tokenizer files shipped.

    The key's ``verify_hit`` is ``check_decoder_hit`` for this model and configuration.
    """
    files = [Path(tokenizer_dir) / name for name in TOKENIZER_FILES] if tokenizer_dir else []
    key = compute_cache_key(family="decoder", architecture=architecture, state_dict=hf_model.state_dict(),
                            config=hf_model.config, generation_config=hf_model.generation_config,
                            npu_config=npu_config.compile_knobs(), npu_spec=resolve_spec(npu_config.npu).to_dict(),
                            extra_files=files, weights_dtype=getattr(torch, npu_config.dtype))
    check = functools.partial(check_decoder_hit, hf_model=hf_model, architecture=architecture,
                              npu_config=npu_config, inputs=key.inputs)
    return dataclasses.replace(key, verify_hit=check)


def check_decoder_hit(target: Path, *, hf_model: Any, architecture: str, npu_config: Any,
                      inputs: dict[str, Any]) -> None:
    """Raises ``CacheMismatchError`` unless ``target`` is the decoder compile the key ``inputs`` describe."""
    target = Path(target)
    stored = verify_artifact(target)
    check_stored_documents(target, stored, hf_model=hf_model, architecture=architecture, family="decoder",
                           inputs=inputs, files=TOKENIZER_FILES)
    check_same(stored.get("graphs"), graph_names(npu_config), "graph list")
    arch = lookup_architecture(hf_model.config, "decoder")
    plan = tensor_parallel_plan(hf_model.config, npu_config.tensor_parallel_size, arch.text_model,
                                npu_config.expert_parallel_size, npu_config.expert_tensor_parallel)
    check_weights(target, stored["graphs"], hf_model, getattr(torch, npu_config.dtype), plan)
