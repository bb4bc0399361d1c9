"""The Diffusers family's registry entry (see ``models/family.py``)."""

from __future__ import annotations

from typing import Any

from optimum_npu.models.decoder.npu_config import NPUConfigError
from optimum_npu.models.diffusion.auto import NPUDiffusionPipeline, is_diffusers_folder
from optimum_npu.models.diffusion.cache_key import diffusion_cache_key
from optimum_npu.models.diffusion.export import compile_pipeline
from optimum_npu.models.diffusion.npu_config import NPUDiffusionConfig, config_from_json
from optimum_npu.models.family import Family


#: Flat command-line knobs a pipeline takes (the rest are language-model knobs).
_FLAT = ("dtype", "npu", "batch_size", "tensor_parallel_size")


def _export_config(knobs: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """``--pipeline-config`` (JSON: the nested ``npu_config``) plus the flat ``--dtype``, ``--npu``,
    ``--batch-size`` (images per call) and ``--tensor-parallel-size`` (the SD3 transformer)."""
    given = sorted(k for k in knobs if k not in _FLAT and knobs[k] is not None)
    if given or options.get("visual_buckets"):
        raise NPUConfigError(f"{given or ['visual_buckets']} apply to language models; this is a Diffusers pipeline: "
                             "its knobs are --pipeline-config (JSON), --dtype, --npu, --batch-size and "
                             "--tensor-parallel-size")
    flat = {k: knobs[k] for k in _FLAT if knobs.get(k) is not None}
    return {**flat, **config_from_json(options.get("pipeline_config"))}   # the JSON's knobs win over defaults


def _placement(device: int, profile: bool = False, prefix_caching: bool = False) -> dict[str, Any]:
    if prefix_caching:
        raise ValueError("--enable-prefix-caching applies to text generation, not to image pipelines")
    return {"devices": {name: device for name in ("text_encoder", "text_encoder_2", "text_encoder_3", "unet",
                                                  "transformer", "vae")}, "profile": profile}


def _plan_config(hf_config: Any) -> Any:
    raise ValueError("planner.plan sizes language models; for a Diffusers pipeline run `optimum-npu plan <folder>` "
                     "(or planner.diffusion_plan.diffusion_plan_table): seconds per image and memory per device")


def _summary(pipe: Any) -> str:
    graphs = [f"{c.npu_name}/{g}" for c in pipe._npu_loaded.components for g in c._engine.graphs]
    return f"{len(graphs)} graphs ({', '.join(graphs)})"


DIFFUSION = Family(
    name="diffusion",
    model_class=NPUDiffusionPipeline,
    config_class=NPUDiffusionConfig,
    graph_builder=compile_pipeline,
    cache_key=diffusion_cache_key,
    export_config=_export_config,
    placement=_placement,
    plan_config=_plan_config,
    summary=_summary,
    recognizes=is_diffusers_folder,
)
