"""Attention of the static-shape decoder, shared by every registered architecture.

The adapter (``models/adapters``) says how the HF attention module is laid out: separate or fused
q/k/v, ``nn.Linear`` or GPT-2 ``Conv1D`` weights, rotary or learned positions, optional q/k norms.
Every view is written with per-head sizes and ``-1`` so that the graph stays valid when the
tensor-parallel pass gives each device a slice of the heads (no feature count is baked in).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

import optimum_npu.device.kernels  # noqa: F401  (registers torch.ops.npu.*)
from optimum_npu.models.adapters.spec import Attention


@dataclass(frozen=True)
class AttentionLayout:
    """Static facts of one layer's attention. ``window`` > 0 selects the sliding-window ring.

    ``groups``: query heads per key/value head (GQA), which also orders a fused q/k/v projection.
    """

    head_dim: int
    qk_norm: bool
    scale: float
    softcap: float = 0.0
    partition_len: int = 0
    window: int = 0
    groups: int = 1


@dataclass
class StepInputs:
    """The per-call tensors every layer reads."""

    cos: torch.Tensor | None        # [B, S, R] (R <= D: partial rotary), None for learned positions
    sin: torch.Tensor | None        # [B, S, R]
    positions: torch.Tensor         # [B, S], -1 = padding
    block_table: torch.Tensor       # [B, blocks_per_seq]
    slots: torch.Tensor             # [B] batch slot of each row (sliding-window rings)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """q [B, S, H, D], k [B, S, KVH, D], cos/sin [B, S, R] -> q, k with their first R features rotated."""
    cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)                   # [B, S, 1, R]
    rotary = cos.shape[-1]
    if rotary == q.shape[-1]:
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
    q_rot, q_pass = q[..., :rotary], q[..., rotary:]                # partial rotary (Phi)
    k_rot, k_pass = k[..., :rotary], k[..., rotary:]
    return (torch.cat((q_rot * cos + rotate_half(q_rot) * sin, q_pass), dim=-1),
            torch.cat((k_rot * cos + rotate_half(k_rot) * sin, k_pass), dim=-1))


def project(module: nn.Module, x: torch.Tensor, linear: str) -> torch.Tensor:
    """``module(x)`` for an ``nn.Linear``; for a GPT-2 ``Conv1D`` (weight [in, out]) the same product as a linear."""
    if linear == "conv1d":
        return torch.nn.functional.linear(x, module.weight.transpose(0, 1), module.bias)
    return module(x)


def qkv_states(attn: nn.Module, hidden: torch.Tensor, spec: Attention, layout: AttentionLayout, linear: str):
    """hidden [B, S, E] -> q [B, S, H, D], k [B, S, KVH, D], v [B, S, KVH, D]."""
    batch, seq, _ = hidden.shape
    dim = layout.head_dim
    if spec.qkv == "separate":
        return tuple(project(getattr(attn, name), hidden, linear).view(batch, seq, -1, dim)
                     for name in spec.projections)
    # fused rows [q (G * KVH heads) | k (KVH heads) | v (KVH heads)]: G + 2 groups of KVH heads
    qkv = project(getattr(attn, spec.projections[0]), hidden, linear)
    qkv = qkv.view(batch, seq, layout.groups + 2, -1, dim)          # [B, S, G + 2, KVH, D]
    q = qkv[:, :, :layout.groups].reshape(batch, seq, -1, dim)      # [B, S, H, D]
    return q, qkv[:, :, layout.groups], qkv[:, :, layout.groups + 1]


def self_attention(attn: nn.Module, hidden: torch.Tensor, layout: AttentionLayout, step: StepInputs,
                   k_cache: torch.Tensor, v_cache: torch.Tensor, spec: Attention = Attention(),
                   linear: str = "linear") -> torch.Tensor:
    """HF attention projections around an NPU attention kernel. hidden [B, S, E] -> [B, S, E]."""
    batch, seq, _ = hidden.shape
    q, k, v = qkv_states(attn, hidden, spec, layout, linear)
    if layout.qk_norm:
        q_norm, k_norm = (getattr(attn, name) for name in spec.qk_norm)
        q, k = q_norm(q), k_norm(k)
    if step.cos is not None:
        q, k = apply_rope(q, k, step.cos, step.sin)
    sinks = {"sinks": getattr(attn, spec.sinks)} if spec.sinks else {}   # [H], by name (after the fp8 scales)
    if layout.window:
        out = torch.ops.npu.sliding_window_attention(q, k, v, k_cache, v_cache, step.slots, step.positions,
                                                     layout.window, layout.scale, layout.softcap, **sinks)
    else:
        out = torch.ops.npu.paged_attention(q, k, v, k_cache, v_cache, step.block_table, step.positions,
                                            layout.scale, layout.partition_len, layout.softcap, **sinks)
    return project(getattr(attn, spec.out), out.reshape(batch, seq, -1), linear)   # [B, S, E]
