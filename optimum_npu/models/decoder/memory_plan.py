"""Device memory a compiled decoder needs, per category, from shapes alone (no weights loaded)."""

from __future__ import annotations

import torch

from optimum_npu.device.memory import DeviceOutOfMemoryError, format_bytes
from optimum_npu.device.spec import NPUSpec
from optimum_npu.models.decoder.npu_config import NPUDecoderConfig
from optimum_npu.models.model_config import DecoderModelConfig


def kv_cache_bytes(model: DecoderModelConfig, config: NPUDecoderConfig) -> int:
    itemsize = getattr(torch, config.dtype).itemsize
    per_layer = config.kvcache_num_blocks * config.kvcache_block_size * model.num_kv_heads * model.head_dim
    return 2 * model.num_layers * per_layer * itemsize


def workspace_estimate(model: DecoderModelConfig, config: NPUDecoderConfig) -> int:
    """Largest activations of a prefill chunk or a full decode batch (logits, MLP and attention scores)."""
    itemsize = getattr(torch, config.dtype).itemsize
    tokens = max(config.prefill_chunk_size, config.batch_size)
    mlp = 3 * tokens * model.intermediate_size * itemsize
    scores = 4 * model.num_heads * config.prefill_chunk_size * config.max_seq_len
    logits = config.batch_size * model.vocab_size * 4
    return mlp + scores + logits


def plan_memory(model: DecoderModelConfig, config: NPUDecoderConfig) -> dict[str, int]:
    itemsize = getattr(torch, config.dtype).itemsize
    return {"weights": model.num_parameters * itemsize, "kv_cache": kv_cache_bytes(model, config),
            "workspace": workspace_estimate(model, config)}


def check_fits(request: dict[str, int], spec: NPUSpec, owner: str) -> None:
    """Raises DeviceOutOfMemoryError with a breakdown when ``request`` exceeds one device's DRAM."""
    total = sum(request.values())
    if total <= spec.dram_bytes:
        return
    lines = [f"{owner} needs {format_bytes(total)} but one {spec.name} device has {format_bytes(spec.dram_bytes)}:"]
    lines += [f"  {category:<10} {format_bytes(nbytes):>12}" for category, nbytes in request.items()]
    lines.append("Reduce max_seq_len or batch_size (KV cache), use a smaller dtype (weights), "
                 "or target an NPU spec with more memory.")
    raise DeviceOutOfMemoryError("\n".join(lines))
