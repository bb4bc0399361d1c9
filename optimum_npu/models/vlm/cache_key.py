"""The vision-language family's compile-cache key and its check of a cache hit.

The key hashes the whole HF model's weights as given (each submodule converts them to its
compile dtype, a keyed knob), the configs, both submodules' compile knobs, the target and the
processor files shipped. A hit is checked like a decoder hit (``models/decoder/cache_key.py``),
with every weight of both submodules' graphs compared to the model's own tensors.
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
from optimum_npu.hub.cache_verify import check_stored_documents, check_weights
from optimum_npu.models.decoder.export import graph_names, tensor_parallel_plan
from optimum_npu.models.registry import lookup_architecture
from optimum_npu.models.vlm.files import PROCESSOR_FILES, SUBMODULE_DIRS
from optimum_npu.models.vlm.visual_export import find_visual


def compile_knobs(config: Any) -> dict[str, Any]:
    """The knobs of an ``NPUVLMConfig`` that change the compiled artifact (placement left out)."""
    return {"visual": config.visual.to_dict(), "language_model": config.language_model.compile_knobs(),
            "npu": config.npu}


def vlm_cache_key(hf_model: Any, architecture: str, npu_config: Any, processor_dir: Path | None) -> CacheKey:
    """``compute_cache_key`` for a vision-language compile; its ``verify_hit`` is ``check_vlm_hit``."""
    files = [Path(processor_dir) / name for name in PROCESSOR_FILES] if processor_dir else []
    key = compute_cache_key(family="vlm", architecture=architecture, state_dict=hf_model.state_dict(),
                            config=hf_model.config, generation_config=hf_model.generation_config,
                            npu_config=compile_knobs(npu_config), npu_spec=resolve_spec(npu_config.npu).to_dict(),
                            extra_files=files)
    check = functools.partial(check_vlm_hit, hf_model=hf_model, architecture=architecture, npu_config=npu_config,
                              inputs=key.inputs)
    return dataclasses.replace(key, verify_hit=check)


def check_vlm_hit(target: Path, *, hf_model: Any, architecture: str, npu_config: Any, inputs: dict[str, Any]) -> None:
    """Raises ``CacheMismatchError`` unless ``target`` is the vision-language compile ``inputs`` describe."""
    target = Path(target)
    stored = verify_artifact(target)
    keyed = inputs["npu_config"]
    knobs = {part: {k: stored[part].get(k) for k in keyed[part]} if isinstance(stored.get(part), dict) else None
             for part in ("visual", "language_model")} | {"npu": stored.get("npu")}
    check_stored_documents(target, stored, hf_model=hf_model, architecture=architecture, family="vlm",
                           inputs=inputs, files=PROCESSOR_FILES, knobs=knobs)
    language = npu_config.language_model
    arch = lookup_architecture(hf_model.config, "vlm")
    plan = tensor_parallel_plan(hf_model.config, language.tensor_parallel_size, arch.text_model)
    check_weights(target / SUBMODULE_DIRS["language_model"], graph_names(language), hf_model,
                  getattr(torch, language.dtype), plan)
    tower, _ = find_visual(hf_model)
    check_weights(target / SUBMODULE_DIRS["visual"], npu_config.visual.graph_names(), tower, getattr(torch, npu_config.visual.dtype),
                  tensor_parallel_plan(hf_model.config, 1, arch.text_model))
