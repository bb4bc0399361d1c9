"""The encoder family's registry entry (see ``models/family.py``)."""

from __future__ import annotations

from typing import Any

from optimum_npu.models.decoder.npu_config import NPUConfigError
from optimum_npu.models.encoder.cache_key import encoder_cache_key
from optimum_npu.models.encoder.export import compile_encoder
from optimum_npu.models.encoder.modeling import NPUEncoderModel
from optimum_npu.models.encoder.npu_config import NPUEncoderConfig
from optimum_npu.models.family import Family
from optimum_npu.models.registry import lookup_architecture

#: Flat command-line knobs that mean nothing to an encoder (no KV cache, no prefill chunks, no decode graphs).
_DECODER_ONLY = ("prefill_chunk_size", "kvcache_block_size", "kvcache_partition_len", "quantization")


def _export_config(knobs: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """``--max-seq-len`` is the one sequence bucket, ``--decoder-batch-sizes`` the batch buckets."""
    given = sorted(k for k in _DECODER_ONLY if knobs.get(k) is not None)
    if given or options.get("visual_buckets"):
        raise NPUConfigError(f"{given or ['visual_buckets']} apply to decoders; this checkpoint is an encoder: "
                             "leave them out (its knobs are --max-seq-len, --decoder-batch-sizes, --dtype, --npu)")
    config: dict[str, Any] = {k: knobs[k] for k in ("dtype", "npu", "tensor_parallel_size") if k in knobs}
    if knobs.get("max_seq_len"):
        config["seq_lens"] = [knobs["max_seq_len"]]
    if knobs.get("decoder_batch_sizes"):
        config["batch_sizes"] = list(knobs["decoder_batch_sizes"])
    return config


def _plan_config(hf_config: Any) -> Any:
    arch = lookup_architecture(hf_config, "encoder")
    raise ValueError(f"the capacity planner sizes decoder-only language models; {arch.name} is an encoder: compile "
                     "it with NPUEncoderModel and read model.npu_stats.memory")



def _placement(device: int, profile: bool = False, prefix_caching: bool = False) -> dict[str, Any]:
    if prefix_caching:
        raise ValueError("--enable-prefix-caching applies to text generation; an encoder runs each input whole")
    return {"device": device, "profile": profile}

ENCODER = Family(
    name="encoder",
    model_class=NPUEncoderModel,
    config_class=NPUEncoderConfig,
    graph_builder=compile_encoder,
    cache_key=encoder_cache_key,
    export_config=_export_config,
    placement=_placement,
    plan_config=_plan_config,
)
