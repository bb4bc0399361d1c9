"""The decoder family's registry entry (see ``models/family.py``)."""

from __future__ import annotations

from typing import Any

from optimum_npu.models.decoder.cache_key import decoder_cache_key
from optimum_npu.models.decoder.export import compile_decoder
from optimum_npu.models.decoder.modeling import NPUModelForCausalLM
from optimum_npu.models.decoder.npu_config import NPUDecoderConfig
from optimum_npu.models.family import Family
from optimum_npu.models.registry import lookup_architecture


def _export_config(knobs: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    if options.get("visual_buckets"):
        raise ValueError("--visual-buckets applies to vision-language models; this checkpoint is a decoder-only "
                         "model: leave it out")
    return knobs


def _plan_config(hf_config: Any) -> Any:
    lookup_architecture(hf_config, "decoder")
    return hf_config


DECODER = Family(
    name="decoder",
    model_class=NPUModelForCausalLM,
    config_class=NPUDecoderConfig,
    graph_builder=compile_decoder,
    cache_key=decoder_cache_key,
    export_config=_export_config,
    placement=lambda device, profile=False, prefix_caching=False: {
        "device": device, "profile": profile, "enable_prefix_caching": prefix_caching},
    plan_config=_plan_config,
)
