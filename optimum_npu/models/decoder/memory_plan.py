"""Device memory a compiled decoder needs, per category, from shapes alone (no weights loaded).

The same sizing rules serve the compile-time fit check, the default size of the paged KV
pool, and the memory report: global layers share a paged pool of
``kvcache_num_blocks x kvcache_block_size`` tokens; sliding-window layers keep a ring of
``sliding_window`` tokens per batch slot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from optimum_npu.device.memory import DeviceOutOfMemoryError, format_bytes
from optimum_npu.device.spec import NPUSpec
from optimum_npu.models.model_config import DecoderModelConfig

if TYPE_CHECKING:
    from optimum_npu.models.decoder.npu_config import NPUDecoderConfig


def cache_shapes(model: DecoderModelConfig, config: "NPUDecoderConfig") -> list[tuple[int, ...]]:
    """Shape of each layer's key (and value) cache: paged pool or ring."""
    shapes = []
    for layer in range(model.num_layers):
        window = model.ring_window(layer, config.max_seq_len)
        if window:
            shapes.append((config.batch_size, model.num_kv_heads, window, model.head_dim))
        else:
            shapes.append((config.kvcache_num_blocks, model.num_kv_heads, config.kvcache_block_size, model.head_dim))
    return shapes


def kv_pool_bytes(model: DecoderModelConfig, config: "NPUDecoderConfig") -> dict[str, int]:
    """Bytes of the paged pool (global layers) and of the rings (sliding layers), keys and values."""
    itemsize = getattr(torch, config.dtype).itemsize
    pools = {"paged": 0, "sliding": 0}
    for layer, shape in enumerate(cache_shapes(model, config)):
        pool = "sliding" if model.ring_window(layer, config.max_seq_len) else "paged"
        pools[pool] += 2 * torch.Size(shape).numel() * itemsize
    return pools


def workspace_estimate(model: DecoderModelConfig, config: "NPUDecoderConfig") -> int:
    """Largest activations of a prefill chunk or a full decode batch (logits, MLP and attention scores)."""
    itemsize = getattr(torch, config.dtype).itemsize
    tokens = max(config.prefill_chunk_size, config.batch_size)
    mlp = 3 * tokens * model.intermediate_size * itemsize
    keys = config.partition_len or config.max_seq_len
    scores = 4 * model.num_heads * config.prefill_chunk_size * keys
    logits = config.batch_size * model.vocab_size * 4
    return mlp + scores + logits


def plan_memory(model: DecoderModelConfig, config: "NPUDecoderConfig") -> dict[str, int]:
    itemsize = getattr(torch, config.dtype).itemsize
    return {"weights": model.num_parameters * itemsize, "kv_cache": sum(kv_pool_bytes(model, config).values()),
            "workspace": workspace_estimate(model, config)}


def blocks_that_fit(model: DecoderModelConfig, config: "NPUDecoderConfig", spec: NPUSpec) -> int:
    """Most paged blocks the device holds after weights, workspace and rings (pool sized from memory)."""
    request = plan_memory(model, config)
    pools = kv_pool_bytes(model, config)
    fixed = request["weights"] + request["workspace"] + pools["sliding"]
    per_block = pools["paged"] // config.kvcache_num_blocks
    if per_block == 0:
        return config.kvcache_num_blocks
    return max(0, (spec.dram_bytes - fixed) // per_block)


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
