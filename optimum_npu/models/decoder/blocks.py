"""Shared compute blocks of the static-shape decoder, reused by every registered architecture."""

from __future__ import annotations

import torch
from torch import nn

import optimum_npu.device.kernels  # noqa: F401  (registers torch.ops.npu.paged_attention)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """q [B, S, H, D], k [B, S, KVH, D], cos/sin [B, S, D] -> rotated q, k."""
    cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)                   # [B, S, 1, D]
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def paged_self_attention(
    attn: nn.Module,
    hidden: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    positions: torch.Tensor,
    head_dim: int,
    qk_norm: bool,
) -> torch.Tensor:
    """HF attention projections around the NPU's paged-attention kernel. hidden [B, S, E] -> [B, S, E]."""
    batch, seq, _ = hidden.shape
    q = attn.q_proj(hidden).view(batch, seq, -1, head_dim)          # [B, S, H, D]
    k = attn.k_proj(hidden).view(batch, seq, -1, head_dim)          # [B, S, KVH, D]
    v = attn.v_proj(hidden).view(batch, seq, -1, head_dim)          # [B, S, KVH, D]
    if qk_norm:
        q, k = attn.q_norm(q), attn.k_norm(k)
    q, k = apply_rope(q, k, cos, sin)
    out = torch.ops.npu.paged_attention(q, k, v, k_cache, v_cache, block_table, positions, head_dim**-0.5)
    return attn.o_proj(out.reshape(batch, seq, -1))                 # [B, S, E]


def pre_norm_decoder_layer(layer: nn.Module, hidden: torch.Tensor, attention_kwargs: dict) -> torch.Tensor:
    """Llama-style layer: x + attn(norm(x)), then x + mlp(norm(x))."""
    hidden = hidden + paged_self_attention(layer.self_attn, layer.input_layernorm(hidden), **attention_kwargs)
    return hidden + layer.mlp(layer.post_attention_layernorm(hidden))
