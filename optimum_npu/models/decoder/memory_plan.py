"""A decoder's device memory estimated from its shape alone, where no graph exists yet.

The memory plan itself, the figures reported (planner, ``npu_stats``, model card) and
reserved at load, comes from the captured graphs (``device/sizing.py``, run by the compile
pipeline). This shape estimate serves only the three places that come before any graph:

- refusing a configuration before capture or weight loading (``NPUModelForCausalLM`` export):
  the decision counts only weights and KV cache, which the shapes give exactly, while the message
  also shows the estimated workspace; the exact check on the graphs follows capture;
- the default size of the paged KV pool (``NPUDecoderConfig.resolve``);
- bounding an untrusted artifact's knobs before its graphs are read (``runtime.check_knob_sizes``).

Global layers share a paged pool of ``kvcache_num_blocks x kvcache_block_size`` tokens;
sliding-window layers keep a ring of ``sliding_window`` tokens per batch slot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from optimum_npu.device.memory import DeviceOutOfMemoryError, format_bytes
from optimum_npu.device.sizing import MemoryPlan
from optimum_npu.device.spec import NPUSpec
from optimum_npu.models.decoder.quantization import kv_bytes_per_element
from optimum_npu.models.decoder.quantization import weight_bytes as quantized_layer_bytes
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
    """Bytes of the paged pool (global layers) and of the rings (sliding layers), keys and values,
    over all devices (each of ``tensor_parallel_size`` devices holds an equal share)."""
    itemsize = kv_bytes_per_element(config.quantization, getattr(torch, config.dtype).itemsize, model.head_dim)
    pools = {"paged": 0, "sliding": 0}
    for layer, shape in enumerate(cache_shapes(model, config)):
        pool = "sliding" if model.ring_window(layer, config.max_seq_len) else "paged"
        pools[pool] += round(2 * torch.Size(shape).numel() * itemsize)
    return pools


def workspace_estimate(model: DecoderModelConfig, config: "NPUDecoderConfig") -> int:
    """Largest activations on one device of a prefill chunk or a full decode batch."""
    itemsize = getattr(torch, config.dtype).itemsize
    tp = config.tensor_parallel_size
    tokens = max(config.prefill_chunk_size, config.batch_size)
    mlp = 3 * tokens * model.intermediate_size * itemsize // tp
    keys = config.partition_len or config.max_seq_len
    scores = 4 * model.num_heads * config.prefill_chunk_size * keys // tp
    logits = config.batch_size * model.vocab_size * 4
    return mlp + scores + logits


def weight_bytes_per_device(model: DecoderModelConfig, config: "NPUDecoderConfig") -> int:
    """Each device holds its shard of the layers (quantized when ``quantization`` says so) and of the vocabulary
    projection, and the whole embedding."""
    itemsize = getattr(torch, config.dtype).itemsize
    tp = config.tensor_parallel_size
    if tp == 1 and config.quantization is None:
        return model.num_parameters * itemsize
    table = model.vocab_size * model.hidden_size
    head = 0 if model.tie_word_embeddings else -(-model.vocab_size // tp) * model.hidden_size
    if tp > 1 and model.tie_word_embeddings:  # the logits projection reads a vocabulary shard of the table
        head = -(-model.vocab_size // tp) * model.hidden_size
    experts_split = tp if config.expert_tensor_parallel else config.expert_parallel_size  # by expert or by size
    return (table + head) * itemsize + quantized_layer_bytes(model, config.quantization, itemsize, tp, experts_split)


def plan_memory(model: DecoderModelConfig, config: "NPUDecoderConfig") -> dict[str, int]:
    """Bytes one device needs, per category."""
    tp = config.tensor_parallel_size
    request = {"weights": weight_bytes_per_device(model, config),
               "kv_cache": sum(kv_pool_bytes(model, config).values()) // tp,
               "workspace": workspace_estimate(model, config)}
    if tp > 1:
        itemsize = getattr(torch, config.dtype).itemsize
        request["collective_buffers"] = 2 * max(config.prefill_chunk_size * model.hidden_size * itemsize,
                                                config.batch_size * model.vocab_size * itemsize)
    return request


def blocks_that_fit(model: DecoderModelConfig, config: "NPUDecoderConfig", spec: NPUSpec) -> int:
    """Most paged blocks the device holds after weights, workspace and rings (pool sized from memory)."""
    request = plan_memory(model, config)
    pools = kv_pool_bytes(model, config)
    fixed = request["weights"] + request["workspace"] + request.get("collective_buffers", 0)
    fixed += pools["sliding"] // config.tensor_parallel_size
    per_block = pools["paged"] // config.tensor_parallel_size // config.kvcache_num_blocks
    if per_block == 0:
        return config.kvcache_num_blocks
    return max(0, (spec.dram_bytes - fixed) // per_block)


def blocks_in_plan(plan: MemoryPlan, num_blocks: int, spec: NPUSpec) -> int:
    """Most paged blocks a device holds next to everything else of a graph memory plan of ``num_blocks`` blocks."""
    per_block = plan.kv_pools.get("paged", 0) // max(num_blocks, 1)
    if per_block == 0:
        return num_blocks
    return max(0, (spec.dram_bytes - (plan.total - plan.kv_pools["paged"])) // per_block)


def exceeds_before_capture(request: dict[str, int], spec: NPUSpec) -> bool:
    """Whether the parts of a shape estimate that the shapes give exactly (weights, KV cache) already
    exceed one device: the refusal before capture; the workspace is known only from the graphs."""
    return request["weights"] + request["kv_cache"] > spec.dram_bytes


def fits(model: DecoderModelConfig, config: "NPUDecoderConfig", spec: NPUSpec) -> bool:
    return sum(plan_memory(model, config).values()) <= spec.dram_bytes


def suggest_fit(model: DecoderModelConfig, config: "NPUDecoderConfig", spec: NPUSpec) -> str:
    """What would fit: the smallest tensor_parallel_size, or the longest max_seq_len at this size."""
    import dataclasses

    hints = []
    if config.kvcache_num_blocks:
        fitting = blocks_that_fit(model, config, spec)
        if config.blocks_per_sequence <= fitting < config.kvcache_num_blocks:
            hints.append(f"kvcache_num_blocks={fitting} fits (the pool of {config.kvcache_num_blocks} blocks does "
                         f"not; at least {config.blocks_per_sequence} hold one max_seq_len sequence)")
    for tp in range(config.tensor_parallel_size + 1, spec.devices_per_node + 1):
        if model.num_kv_heads % tp or model.num_heads % tp or model.intermediate_size % tp:
            continue
        candidate = dataclasses.replace(config, tensor_parallel_size=tp, device=0,
                                        expert_parallel_size=tp if config.expert_parallel_size > 1 else 1)
        if fits(model, candidate, spec):
            hints.append(f"tensor_parallel_size={tp}" + (f" with expert_parallel_size={tp}" if
                                                          candidate.expert_parallel_size > 1 else "") + " fits")
            break
    length = config.max_seq_len
    while length > config.kvcache_block_size:
        length = max(config.kvcache_block_size, (length // 2) // config.kvcache_block_size * config.kvcache_block_size)
        candidate = dataclasses.replace(config, max_seq_len=length, kvcache_num_blocks=None, kvcache_partition_len=None)
        candidate = dataclasses.replace(candidate, kvcache_num_blocks=config.batch_size * (length // config.kvcache_block_size))
        if fits(model, candidate, spec):
            hints.append(f"max_seq_len={length} fits at tensor_parallel_size={config.tensor_parallel_size}")
            break
    return "; ".join(hints) if hints else "no smaller configuration on this spec fits: choose an NPU with more memory"


def check_fits(request: dict[str, int], spec: NPUSpec, owner: str, suggestion: str = "") -> None:
    """Raises DeviceOutOfMemoryError with a per-device breakdown when ``request`` exceeds one device's DRAM."""
    total = sum(request.values())
    if total <= spec.dram_bytes:
        return
    lines = [f"{owner} needs {format_bytes(total)} per device but one {spec.name} device has "
             f"{format_bytes(spec.dram_bytes)}:"]
    lines += [f"  {category:<18} {format_bytes(nbytes):>12}" for category, nbytes in request.items()]
    lines.append(f"Suggestion: {suggestion}." if suggestion else
                 "Reduce max_seq_len or batch_size (KV cache), use a smaller dtype (weights), raise "
                 "tensor_parallel_size, or target an NPU spec with more memory.")
    raise DeviceOutOfMemoryError("\n".join(lines))
