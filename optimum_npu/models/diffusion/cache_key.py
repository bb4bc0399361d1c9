"""The compile-cache keys of a pipeline and of a component compiled alone, and their hit checks.

The key hashes every component's weights in the compile dtype, every component's config, the tokenizers'
vocabularies, the scheduler config, the compile knobs, the pipeline kind and the target; a hit is checked
by its stored knobs and spec, and every graph weight of every component compared to the pipeline's.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from optimum_npu.compile.artifact import verify_artifact
from optimum_npu.compile.tensor_parallel_plan import TensorParallelPlan
from optimum_npu.device.spec import resolve_spec
from optimum_npu.hub.cache_key import CacheKey, compute_cache_key
from optimum_npu.hub.cache_verify import check_same, check_weights
from optimum_npu.models.diffusion import component_plan
from optimum_npu.models.diffusion.components import KIND_FAMILY
from optimum_npu.models.diffusion.export import TOKENIZERS
from optimum_npu.models.diffusion.parallel import component_split
from optimum_npu.models.diffusion.plan import component_plans


#: Bumped when a component folder's layout changes (entries of an older layout then miss).
COMPONENT_FORMAT = 2


def _tokenizer_digest(tokenizer: Any) -> str:
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), separators=(",", ":"))
    return hashlib.sha256(f"{vocab}|{tokenizer.model_max_length}".encode()).hexdigest()


def diffusion_cache_key(pipe: Any, kind: str, npu_config: Any, with_vae_encoder: bool) -> CacheKey:
    """``compute_cache_key`` for a pipeline compile; its ``verify_hit`` is ``check_diffusion_hit``."""
    plans = component_plans(pipe, npu_config, with_vae_encoder)
    state = {f"{p.folder}.{k}": v for p in plans for k, v in p.module.state_dict().items()}
    configs = {p.folder: dict(p.module.config.to_dict() if hasattr(p.module.config, "to_dict") else p.module.config)
               for p in plans}
    configs["tokenizers"] = {n: _tokenizer_digest(getattr(pipe, n)) for n in TOKENIZERS if getattr(pipe, n, None)}
    configs["scheduler"] = dict(pipe.scheduler.config)
    knobs = {**npu_config.to_dict(), "pipeline": kind, "components": [p.folder for p in plans],
             "component_format": COMPONENT_FORMAT}
    key = compute_cache_key(family="diffusion", architecture=kind, state_dict=state, config=configs,
                            generation_config=None, npu_config=knobs, npu_spec=resolve_spec(npu_config.npu).to_dict(),
                            weights_dtype=getattr(torch, npu_config.dtype))
    check = functools.partial(check_diffusion_hit, plans=plans, kind=kind, npu_config=npu_config)
    return dataclasses.replace(key, verify_hit=check)


def check_diffusion_hit(target: Path, *, plans: list, kind: str, npu_config: Any) -> None:
    """Raises ``CacheMismatchError`` unless ``target`` is the pipeline compile the key describes."""
    stored = verify_artifact(Path(target))
    check_same([stored.get("family"), stored.get("pipeline")], ["diffusion", kind], "pipeline kind")
    check_same({k: stored.get(k) for k in npu_config.to_dict()}, npu_config.to_dict(), "compile configuration")
    check_same(stored.get("npu_spec"), resolve_spec(npu_config.npu).to_dict(), "NPU spec")
    check_same(sorted(stored.get("components", {})), sorted(p.folder for p in plans), "components")
    dtype = getattr(torch, npu_config.dtype)
    for plan in plans:
        folder = Path(target) / plan.folder
        graphs = json.loads((folder / "npu_config.json").read_text())["graphs"]
        check_same(graphs, [bucket.name for bucket, _ in plan.buckets], f"{plan.folder} graphs")
        check_weights(folder, graphs, plan.module, dtype, _split(plan))


def _split(plan: Any) -> TensorParallelPlan:
    """The denoiser's real split (a TP > 1 entry is compared rank by rank); one device for other components."""
    return component_split(plan.kind, plan.module, plan.tensor_parallel_size) or TensorParallelPlan(1)


def component_cache_key(module: Any, kind: str, config: Any) -> CacheKey:
    """``compute_cache_key`` for one component compiled alone (``config`` resolved); checked like a pipeline's."""
    plans = component_plan.plans(kind, kind, module, config)
    family = KIND_FAMILY[plans[0].kind]
    hf_config = dict(module.config.to_dict() if hasattr(module.config, "to_dict") else module.config)
    knobs = {**config.to_dict(), "component_format": COMPONENT_FORMAT}
    key = compute_cache_key(family=family, architecture=type(module).__name__, state_dict=module.state_dict(),
                            config=hf_config, generation_config=None, npu_config=knobs,
                            npu_spec=resolve_spec(config.npu).to_dict(), weights_dtype=getattr(torch, config.dtype))
    return dataclasses.replace(key, verify_hit=functools.partial(_check_component_hit, plans=plans, family=family,
                                                                 config=config))


def _check_component_hit(target: Path, *, plans: list, family: str, config: Any) -> None:
    stored = verify_artifact(Path(target))
    check_same(stored.get("family"), family, "component family")
    check_same({k: stored.get(k) for k in config.to_dict()}, config.to_dict(), "compile configuration")
    check_same(stored.get("npu_spec"), resolve_spec(config.npu).to_dict(), "NPU spec")
    check_same(stored.get("graphs"), [bucket.name for plan in plans for bucket, _ in plan.buckets], "graphs")
    check_weights(Path(target), stored["graphs"], plans[0].module, getattr(torch, config.dtype), _split(plans[0]))
