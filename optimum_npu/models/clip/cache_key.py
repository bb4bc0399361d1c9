"""CLIP's compile-cache key and its check of a cache hit.

The key hashes the whole model's weights in the compile dtype, its config, both towers' knobs, the target and
the tokenizer / image processor files; a hit is checked document by document and weight by weight for each
tower (``hub/cache_verify``) and for the logit scale.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from optimum_npu.compile.artifact import verify_artifact
from optimum_npu.compile.tensor_parallel_plan import TensorParallelPlan
from optimum_npu.device.spec import resolve_spec
from optimum_npu.hub.cache_key import CacheKey, compute_cache_key
from optimum_npu.hub.cache_verify import CacheMismatchError, check_same, check_stored_documents, check_weights
from optimum_npu.models.clip.export import LOGIT_SCALE_FILE, SUBMODULE_DIRS, towers
from optimum_npu.models.encoder.files import ENCODER_FILES
from optimum_npu.schema import NPU_CONFIG_FILE
from optimum_npu.untrusted import load_json


def clip_cache_key(hf_model: Any, architecture: str, npu_config: Any, processor_dir: Path | None) -> CacheKey:
    """``compute_cache_key`` for a CLIP compile; its ``verify_hit`` is ``check_clip_hit``."""
    files = [Path(processor_dir) / name for name in ENCODER_FILES] if processor_dir else []
    key = compute_cache_key(family="clip", architecture=architecture, state_dict=hf_model.state_dict(),
                            config=hf_model.config, generation_config=None, npu_config=npu_config.to_dict(),
                            npu_spec=resolve_spec(npu_config.npu).to_dict(), extra_files=files,
                            weights_dtype=getattr(torch, npu_config.dtype))
    check = functools.partial(check_clip_hit, hf_model=hf_model, architecture=architecture, npu_config=npu_config,
                              inputs=key.inputs)
    return dataclasses.replace(key, verify_hit=check)


def check_clip_hit(target: Path, *, hf_model: Any, architecture: str, npu_config: Any, inputs: dict[str, Any]) -> None:
    """Raises ``CacheMismatchError`` unless ``target`` is the CLIP compile the key ``inputs`` describe."""
    target = Path(target)
    stored = verify_artifact(target)
    check_stored_documents(target, stored, hf_model=hf_model, architecture=architecture, family="clip",
                           inputs=inputs, files=ENCODER_FILES)
    dtype = getattr(torch, npu_config.dtype)
    for name, tower in towers(hf_model).items():
        folder = target / SUBMODULE_DIRS[name]
        graphs = load_json(folder / NPU_CONFIG_FILE).get("graphs")
        check_same(graphs, npu_config.tower(name).graph_names(), f"{name} graph list")
        check_weights(folder, graphs, tower, dtype, TensorParallelPlan(1))
    with safe_open(str(target / LOGIT_SCALE_FILE), framework="pt") as handle:
        if set(handle.keys()) != {"logit_scale"} or not torch.equal(handle.get_tensor("logit_scale"),
                                                                    hf_model.logit_scale.detach().to(dtype)):
            raise CacheMismatchError("its logit scale differs from the model being compiled")
