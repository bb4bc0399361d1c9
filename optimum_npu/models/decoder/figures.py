"""The figures a text-generating model's card states: device memory per category and simulated speed.

Memory is what loading the artifact reserves on one simulated device (weights, KV cache,
workspace), i.e. the compiler's memory plan as the device accounts it. Speed comes from
running greedy ``generate()`` on the simulated NPU with a synthetic prompt: the times are
the cost model's (roofline per op, see ``device/cost.py``), not measurements on hardware.
"""

from __future__ import annotations

from typing import Any

import torch

from optimum_npu.models.model_config import DecoderModelConfig

#: Tokens generated per measurement run (capped at half of ``max_seq_len``).
DEFAULT_NEW_TOKENS = 16
SPEED_KEYS = ("ttft_ms", "decode_ms_per_token", "tokens_per_s", "prefill_chunks", "decode_steps")


def measure_figures(model: Any, *, speed: bool = True, new_tokens: int = DEFAULT_NEW_TOKENS) -> dict[str, Any]:
    """Memory and simulated speed of a loaded text-generating model (a decoder, or a VLM on text).

    Args:
        model: the loaded NPU model.
        speed: also run ``generate()`` at batch 1 and at the compiled ``batch_size``.
        new_tokens: tokens generated per run.

    Returns:
        ``{"device", "spec", "memory_bytes", "memory_capacity_bytes", "prompt_tokens", "new_tokens",
        "runs": [{"batch", "ttft_ms", "decode_ms_per_token", "tokens_per_s", ...}]}``.
    """
    config = model.decoder_config
    stats = model.npu_stats
    new = max(1, min(new_tokens, config.max_seq_len // 2))
    prompt = max(1, min(config.prefill_chunk_size, config.max_seq_len - new))
    figures: dict[str, Any] = {"device": stats.device, "spec": stats.spec, "memory_bytes": dict(stats.memory),
                               "memory_capacity_bytes": stats.memory_capacity, "prompt_tokens": prompt,
                               "new_tokens": new, "runs": []}
    if speed:
        vocab = DecoderModelConfig.from_hf(model.config).vocab_size
        generation = model.generation_config
        pad = next((t for t in (generation.pad_token_id, generation.eos_token_id, 0) if t is not None), 0)
        pad = pad[0] if isinstance(pad, list) else pad
        for batch in sorted({1, config.batch_size}):
            ids = (torch.arange(batch * prompt).reshape(batch, prompt) * 7 + 3) % vocab
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                           do_sample=False, pad_token_id=pad)
            run = model.npu_stats.to_dict()
            figures["runs"].append({"batch": batch, **{k: run[k] for k in SPEED_KEYS}})
    return figures
