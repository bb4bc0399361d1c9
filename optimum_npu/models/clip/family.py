"""The CLIP family's registry entry (see ``models/family.py``): two encoder towers in one artifact."""

from __future__ import annotations

from typing import Any

from optimum_npu.models.clip.cache_key import clip_cache_key
from optimum_npu.models.clip.export import compile_clip
from optimum_npu.models.clip.modeling import NPUCLIPModel
from optimum_npu.models.clip.npu_config import NPUCLIPConfig
from optimum_npu.models.encoder.family import ENCODER
from optimum_npu.models.family import Family
from optimum_npu.models.registry import lookup_architecture


def _export_config(knobs: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """The encoder's flat knobs: ``--max-seq-len`` is the text tower's one sequence bucket,
    ``--decoder-batch-sizes`` both towers' batch buckets."""
    flat = ENCODER.export_config(knobs, options)
    batches = {"batch_sizes": flat.pop("batch_sizes")} if "batch_sizes" in flat else {}
    seq_lens = {"seq_lens": flat.pop("seq_lens")} if "seq_lens" in flat else {}
    return {**flat, "text": {**seq_lens, **batches}, "vision": dict(batches)}


def _plan_config(hf_config: Any) -> Any:
    arch = lookup_architecture(hf_config, "clip")
    raise ValueError(f"the capacity planner sizes decoder-only language models; {arch.name} is a CLIP model: compile "
                     "it with NPUCLIPModel and read model.npu_stats")


CLIP = Family(
    name="clip",
    model_class=NPUCLIPModel,
    config_class=NPUCLIPConfig,
    graph_builder=compile_clip,
    cache_key=clip_cache_key,
    export_config=_export_config,
    placement=ENCODER.placement,
    plan_config=_plan_config,
)
