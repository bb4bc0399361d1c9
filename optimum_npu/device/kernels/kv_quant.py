"""An fp8 KV cache: keys and values stored in float8 e4m3 with one float32 scale per token and head.

The attention kernels write a new token's key (or value) ``x`` [..., D] as ``x / s`` in fp8 with
``s = max|x| / 448`` (the format's largest value) stored beside it, and read it back as ``q * s``.
Without scale tensors (no fp8 cache) both functions are plain casts.
"""

from __future__ import annotations

import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max


def store_kv(cache: torch.Tensor, scales: torch.Tensor | None, index: tuple, x: torch.Tensor) -> None:
    """Writes ``x`` [N, KVH, D] at ``cache[index]`` (its scales [N, KVH] at ``scales[index]`` when given)."""
    if scales is None:
        cache[index] = x if x.dtype == cache.dtype else x.to(cache.dtype)
        return
    scale = x.float().abs().amax(dim=-1) / FP8_MAX                                      # [N, KVH]
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    cache[index] = (x.float() / scale[..., None]).to(cache.dtype)
    scales[index] = scale


def load_kv(values: torch.Tensor, scales: torch.Tensor | None) -> torch.Tensor:
    """Cached values [..., T, D] (and their scales [..., T]) as float32 [..., T, D]; without scales, unchanged."""
    if scales is None:
        return values
    return values.float() * scales[..., None]
