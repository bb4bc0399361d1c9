"""The encoder family's compile-cache key and its check of a cache hit.

The key hashes the weights in the compile dtype, the config as the artifact stores it, the task, the
compile knobs, the target and the tokenizer files shipped; a hit is checked like a decoder hit
(``hub/cache_verify.check_stored_documents``) with every graph weight compared to the model's.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import torch

from optimum_npu.compile.artifact import verify_artifact
from optimum_npu.compile.tensor_parallel_plan import TensorParallelPlan
from optimum_npu.device.spec import resolve_spec
from optimum_npu.hub.cache_key import CacheKey, compute_cache_key
from optimum_npu.hub.cache_verify import check_same, check_stored_documents, check_weights

from optimum_npu.models.encoder.export import artifact_config
from optimum_npu.models.encoder.files import ENCODER_FILES
from optimum_npu.models.encoder.tp_plan import encoder_tp_plan


def compile_knobs(npu_config: Any, task: str) -> dict[str, Any]:
    return {**npu_config.to_dict(), "task": task}


def encoder_cache_key(hf_model: Any, architecture: str, npu_config: Any, tokenizer_dir: Path | None,
                      task: str) -> CacheKey:
    """``compute_cache_key`` for an encoder compile; its ``verify_hit`` is ``check_encoder_hit``."""
    files = [Path(tokenizer_dir) / name for name in ENCODER_FILES] if tokenizer_dir else []
    key = compute_cache_key(family="encoder", architecture=architecture, state_dict=hf_model.state_dict(),
                            config=artifact_config(hf_model), generation_config=None,
                            npu_config=compile_knobs(npu_config, task), npu_spec=resolve_spec(npu_config.npu).to_dict(),
                            extra_files=files, weights_dtype=getattr(torch, npu_config.dtype))
    check = functools.partial(check_encoder_hit, hf_model=hf_model, architecture=architecture, npu_config=npu_config,
                              inputs=key.inputs)
    return dataclasses.replace(key, verify_hit=check)


def check_encoder_hit(target: Path, *, hf_model: Any, architecture: str, npu_config: Any,
                      inputs: dict[str, Any]) -> None:
    """Raises ``CacheMismatchError`` unless ``target`` is the encoder compile the key ``inputs`` describe."""
    target = Path(target)
    stored = verify_artifact(target)
    check_stored_documents(target, stored, hf_model=hf_model, architecture=architecture, family="encoder",
                           inputs=inputs, files=ENCODER_FILES)
    check_same(stored.get("graphs"), npu_config.graph_names(), "graph list")
    plan = encoder_tp_plan(hf_model.config.model_type, npu_config.tensor_parallel_size) or TensorParallelPlan(1)
    check_weights(target, stored["graphs"], hf_model, getattr(torch, npu_config.dtype), plan)
