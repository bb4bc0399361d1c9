"""The seq2seq family's registry entry (see ``models/family.py``)."""

from __future__ import annotations

from typing import Any

from optimum_npu.models.decoder.npu_config import NPUConfigError
from optimum_npu.models.family import Family
from optimum_npu.models.registry import lookup_architecture
from optimum_npu.models.seq2seq.cache_key import seq2seq_cache_key
from optimum_npu.models.seq2seq.export import compile_seq2seq
from optimum_npu.models.seq2seq.modeling import NPUModelForSeq2SeqLM
from optimum_npu.models.seq2seq.npu_config import NPUSeq2SeqConfig
from optimum_npu.models.seq2seq.speech import NPUModelForSpeechSeq2Seq  # noqa: F401  (registers the Whisper class)

#: Flat command-line knobs with the same meaning for a seq2seq decoder.
_SHARED = ("dtype", "npu", "tensor_parallel_size", "max_seq_len", "batch_size", "decoder_batch_sizes",
           "prefill_chunk_size", "kvcache_block_size", "kvcache_partition_len")


def _export_config(knobs: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    if knobs.get("quantization") is not None or options.get("visual_buckets"):
        raise NPUConfigError("quantization / visual_buckets do not apply to encoder-decoder models; leave them out")
    return {k: knobs[k] for k in _SHARED if knobs.get(k) is not None}


def _plan_config(hf_config: Any) -> Any:
    arch = lookup_architecture(hf_config, "seq2seq")
    raise ValueError(f"planner.plan sizes decoder-only language models; {arch.name} is an encoder-decoder model: "
                     "run `optimum-npu plan <folder>` (or planner.seq2seq_plan.seq2seq_plan_table) for its memory, "
                     "encoder and decode estimates")


def _placement(device: int, profile: bool = False, prefix_caching: bool = False) -> dict[str, Any]:
    if prefix_caching:
        raise ValueError("--enable-prefix-caching does not apply to encoder-decoder models")
    return {"device": device, "profile": profile}


SEQ2SEQ = Family(
    name="seq2seq",
    model_class=NPUModelForSeq2SeqLM,
    config_class=NPUSeq2SeqConfig,
    graph_builder=compile_seq2seq,
    cache_key=seq2seq_cache_key,
    export_config=_export_config,
    placement=_placement,
    plan_config=_plan_config,
)
