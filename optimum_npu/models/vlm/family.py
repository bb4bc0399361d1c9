"""The vision-language family's registry entry (see ``models/family.py``)."""

from __future__ import annotations

from typing import Any

from optimum_npu.models.family import Family, graph_summary
from optimum_npu.models.registry import lookup_architecture
from optimum_npu.models.vlm.cache_key import vlm_cache_key
from optimum_npu.models.vlm.export import compile_vlm
from optimum_npu.models.vlm.modeling import NPUModelForImageTextToText
from optimum_npu.models.vlm.npu_config import NPUVLMConfig


def _export_config(knobs: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """The flat knobs are the language model's; the visual buckets have their own option."""
    knobs = dict(knobs)
    npu = knobs.pop("npu", "atom")
    visual = {"max_seq_len": options["visual_buckets"]} if options.get("visual_buckets") else {}
    return {"visual": visual, "language_model": knobs, "npu": npu}


def _plan_config(hf_config: Any) -> Any:
    arch = lookup_architecture(hf_config, "vlm")
    raise ValueError(f"the capacity planner sizes decoder-only language models; {arch.name} is a vision-language "
                     "model: plan its language model from a decoder config of the same shape (its text_config), "
                     "or compile it with NPUModelForImageTextToText and read model.npu_stats")


VLM = Family(
    name="vlm",
    model_class=NPUModelForImageTextToText,
    config_class=NPUVLMConfig,
    graph_builder=compile_vlm,
    cache_key=vlm_cache_key,
    export_config=_export_config,
    placement=lambda device, profile=False, prefix_caching=False: {
        "device_map": {"language_model": device, "visual": [device if isinstance(device, int) else device[0]]},
        "language_model": {"profile": profile, "enable_prefix_caching": prefix_caching}},
    plan_config=_plan_config,
    summary=lambda model: graph_summary([*model.npu_graphs,
                                         *(f"visual/{name}" for name in model.npu_config.visual.graph_names())]),
)
