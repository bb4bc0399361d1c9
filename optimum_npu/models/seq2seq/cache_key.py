"""The seq2seq family's compile-cache key and its check of a cache hit (as the encoder family's: weights in the
compile dtype, config, generation config, knobs with the alignment heads, target, shipped files)."""

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
from optimum_npu.models.seq2seq.architectures import Seq2SeqModelConfig
from optimum_npu.models.seq2seq.export import SHIPPED_FILES
from optimum_npu.models.seq2seq.tp_plan import seq2seq_tp_plan


def compile_knobs(npu_config: Any, alignment_heads: tuple) -> dict[str, Any]:
    return {**npu_config.to_dict(), "alignment_heads": [list(pair) for pair in alignment_heads]}


def seq2seq_cache_key(hf_model: Any, architecture: str, npu_config: Any, shipped_dir: Path | None,
                      alignment_heads: tuple = ()) -> CacheKey:
    """``compute_cache_key`` for a seq2seq compile; its ``verify_hit`` is ``check_seq2seq_hit``."""
    files = [Path(shipped_dir) / name for name in SHIPPED_FILES] if shipped_dir else []
    key = compute_cache_key(family="seq2seq", architecture=architecture, state_dict=hf_model.state_dict(),
                            config=hf_model.config, generation_config=hf_model.generation_config,
                            npu_config=compile_knobs(npu_config, alignment_heads),
                            npu_spec=resolve_spec(npu_config.npu).to_dict(), extra_files=files,
                            weights_dtype=getattr(torch, npu_config.dtype))
    check = functools.partial(check_seq2seq_hit, hf_model=hf_model, architecture=architecture, npu_config=npu_config,
                              inputs=key.inputs)
    return dataclasses.replace(key, verify_hit=check)


def check_seq2seq_hit(target: Path, *, hf_model: Any, architecture: str, npu_config: Any,
                      inputs: dict[str, Any]) -> None:
    """Raises ``CacheMismatchError`` unless ``target`` is the seq2seq compile the key ``inputs`` describe."""
    target = Path(target)
    stored = verify_artifact(target)
    check_stored_documents(target, stored, hf_model=hf_model, architecture=architecture, family="seq2seq",
                           inputs=inputs, files=SHIPPED_FILES)
    check_same(stored.get("graphs"), npu_config.graph_names(), "graph list")
    model = Seq2SeqModelConfig.from_hf(hf_model.config, architecture)
    plan = seq2seq_tp_plan(model, npu_config.tensor_parallel_size) or TensorParallelPlan(1)
    check_weights(target, stored["graphs"], hf_model, getattr(torch, npu_config.dtype), plan)
