"""Shared compute blocks of the static-shape decoder, reused by every registered architecture."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

import optimum_npu.device.kernels  # noqa: F401  (registers torch.ops.npu.*)


@dataclass(frozen=True)
class AttentionLayout:
    """Static facts of one layer's attention. ``window`` > 0 selects the sliding-window ring."""

    head_dim: int
    qk_norm: bool
    scale: float
    softcap: float = 0.0
    partition_len: int = 0
    window: int = 0


@dataclass
class StepInputs:
    """The per-call tensors every layer reads."""

    cos: torch.Tensor               # [B, S, D]
    sin: torch.Tensor               # [B, S, D]
    positions: torch.Tensor         # [B, S], -1 = padding
    block_table: torch.Tensor       # [B, blocks_per_seq]
    slots: torch.Tensor             # [B] batch slot of each row (sliding-window rings)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """q [B, S, H, D], k [B, S, KVH, D], cos/sin [B, S, D] -> rotated q, k."""
    cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)                   # [B, S, 1, D]
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def self_attention(attn: nn.Module, hidden: torch.Tensor, layout: AttentionLayout, step: StepInputs,
                   k_cache: torch.Tensor, v_cache: torch.Tensor) -> torch.Tensor:
    """HF attention projections around an NPU attention kernel. hidden [B, S, E] -> [B, S, E]."""
    batch, seq, _ = hidden.shape
    q = attn.q_proj(hidden).view(batch, seq, -1, layout.head_dim)   # [B, S, H, D]
    k = attn.k_proj(hidden).view(batch, seq, -1, layout.head_dim)   # [B, S, KVH, D]
    v = attn.v_proj(hidden).view(batch, seq, -1, layout.head_dim)   # [B, S, KVH, D]
    if layout.qk_norm:
        q, k = attn.q_norm(q), attn.k_norm(k)
    q, k = apply_rope(q, k, step.cos, step.sin)
    if layout.window:
        out = torch.ops.npu.sliding_window_attention(q, k, v, k_cache, v_cache, step.slots, step.positions,
                                                     layout.window, layout.scale, layout.softcap)
    else:
        out = torch.ops.npu.paged_attention(q, k, v, k_cache, v_cache, step.block_table, step.positions,
                                            layout.scale, layout.partition_len, layout.softcap)
    return attn.o_proj(out.reshape(batch, seq, -1))                 # [B, S, E]


def pre_norm_layer(layer: nn.Module, hidden: torch.Tensor, attention) -> torch.Tensor:
    """Llama-style layer: x + attn(norm(x)), then x + mlp(norm(x))."""
    hidden = hidden + attention(layer.input_layernorm(hidden))
    return hidden + layer.mlp(layer.post_attention_layernorm(hidden))


def sandwich_norm_layer(layer: nn.Module, hidden: torch.Tensor, attention) -> torch.Tensor:
    """Gemma-3-style layer: norms before and after both the attention and the MLP."""
    hidden = hidden + layer.post_attention_layernorm(attention(layer.input_layernorm(hidden)))
    return hidden + layer.post_feedforward_layernorm(layer.mlp(layer.pre_feedforward_layernorm(hidden)))


LAYER_BLOCKS = {"pre_norm": pre_norm_layer, "sandwich_norm": sandwich_norm_layer}
