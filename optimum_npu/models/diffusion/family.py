"""The Diffusers family's registry entry (see ``models/family.py``)."""

from __future__ import annotations

from typing import Any

from optimum_npu.models.diffusion.auto import NPUDiffusionPipeline, is_diffusers_folder
from optimum_npu.models.diffusion.cache_key import diffusion_cache_key
from optimum_npu.models.diffusion.export import compile_pipeline
from optimum_npu.models.diffusion.npu_config import NPUDiffusionConfig, diffusers_export_config
from optimum_npu.models.family import Family


#: Flat command-line knobs a pipeline takes (the rest are language-model knobs): ``--batch-size`` is images per
#: call, ``--tensor-parallel-size`` splits the denoiser; ``--pipeline-config`` is the nested ``npu_config``.
_export_config = diffusers_export_config("pipeline", ("dtype", "npu", "batch_size", "tensor_parallel_size"))


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
