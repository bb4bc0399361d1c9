"""The static-shape forward of a Qwen2-VL / Qwen2.5-VL / Qwen3-VL vision tower, as captured per bucket.

``StaticVisual.forward(pixel_values [S, patch_dim], positions [S, 2], full_segments [S],
window_segments [S]) -> merged [S / merge_unit, out_hidden]`` for a bucket of S patches.
``StaticQwen3Visual.forward(pixel_values, positions, full_segments, pos_indices [S, 4],
pos_weights [S, 4]) -> (merged, deepstack [L, S / merge_unit, out_hidden])``: the learned position
grid is gathered at the host-computed bilinear taps, and the DeepStack mergers of the
``deepstack_visual_indexes`` blocks give one merged feature map each.

It reuses the HF modules (patch embedding weight, rotary embedding, block norms, qkv/proj,
MLPs, merger), so weights keep their HF names (relative to the vision tower), and replaces
only the variable-length attention (``cu_seqlens``) with attention over the whole bucket
under a segment mask: a patch attends to the patches of its own segment (its frame for full
attention, its window for Qwen2.5-VL window attention); padding is a segment of its own.
The patch embedding, a Conv3d whose stride equals its kernel, is the matmul it amounts to.
"""

from __future__ import annotations

import torch
from torch import nn

import optimum_npu.device.kernels  # noqa: F401  (registers torch.ops.npu.segment_attention)
from optimum_npu.models.vlm.visual_config import VisualModelConfig

INPUT_NAMES = ["pixel_values", "positions", "full_segments", "window_segments"]
#: Graph inputs of each encoder kind, in ``forward`` order.
KIND_INPUTS = {"qwen2_vl": INPUT_NAMES[:3], "qwen2_5_vl": INPUT_NAMES,
               "qwen3_vl": INPUT_NAMES[:3] + ["pos_indices", "pos_weights"]}


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def masked_attention(attn: nn.Module, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                     segments: torch.Tensor, num_heads: int) -> torch.Tensor:
    """HF vision attention (qkv, rotary, proj) over the bucket, each patch attending within its
    segment (``npu.segment_attention``). hidden [S, E] -> [S, E]."""
    seq = hidden.shape[0]
    qkv = attn.qkv(hidden).reshape(seq, 3, num_heads, -1).permute(1, 2, 0, 3)   # [3, H, S, D]
    q, k, v = qkv.unbind(0)                                                      # each [H, S, D]
    dtype = q.dtype
    cos, sin = cos.float(), sin.float()                                          # [S, D], as HF: rotary in fp32
    q = (q.float() * cos + rotate_half(q.float()) * sin).to(dtype)
    k = (k.float() * cos + rotate_half(k.float()) * sin).to(dtype)
    out = torch.ops.npu.segment_attention(q, k, v, segments, attn.scaling)       # [H, S, D]
    return attn.proj(out.transpose(0, 1).reshape(seq, -1))                       # [S, E]


class StaticVisual(nn.Module):
    """Wraps an HF vision tower (``model.visual``) with a static-shape, segment-masked forward.

    Args:
        visual: the HF vision tower (its modules and weights are used as they are).
        model: the normalised vision config.
    """

    def __init__(self, visual: nn.Module, model: VisualModelConfig):
        super().__init__()
        self.visual = visual
        self.model = model

    def forward(
        self,
        pixel_values: torch.Tensor,      # [S, C*T*P*P] patches, padded (Qwen2.5-VL: in window order)
        positions: torch.Tensor,         # [S, 2] int64 (h, w) of each patch
        full_segments: torch.Tensor,     # [S] int64 frame id, -1 = padding
        window_segments: torch.Tensor | None = None,  # [S] int64 window id (Qwen2.5-VL), -1 = padding
    ) -> torch.Tensor:
        visual, model = self.visual, self.model
        weight = visual.patch_embed.proj.weight                                  # [E, C, T, P, P]
        hidden = torch.nn.functional.linear(pixel_values.to(weight.dtype), weight.reshape(weight.shape[0], -1))
        cos, sin = visual.rotary_pos_emb(hidden, positions)                      # each [S, D]
        for index, block in enumerate(visual.blocks):
            segments = window_segments if model.uses_window(index) else full_segments   # [S]
            hidden = hidden + masked_attention(block.attn, block.norm1(hidden), cos, sin, segments, model.num_heads)
            hidden = hidden + block.mlp(block.norm2(hidden))                     # [S, E]
        return visual.merger(hidden)                                             # [S / merge_unit, out_hidden]


class StaticQwen3Visual(StaticVisual):
    """Qwen3-VL vision tower: learned (interpolated) position embedding, full attention per frame, DeepStack."""

    def forward(
        self,
        pixel_values: torch.Tensor,      # [S, C*T*P*P] patches, padded
        positions: torch.Tensor,         # [S, 2] int64 (h, w) of each patch
        full_segments: torch.Tensor,     # [S] int64 frame id, -1 = padding
        pos_indices: torch.Tensor,       # [S, 4] int64 rows of the learned position grid (bilinear taps)
        pos_weights: torch.Tensor,       # [S, 4] fp32 bilinear weights (0 for padding)
    ) -> tuple[torch.Tensor, torch.Tensor]:
        visual, model = self.visual, self.model
        proj = visual.patch_embed.proj
        hidden = torch.nn.functional.linear(pixel_values.to(proj.weight.dtype),
                                            proj.weight.reshape(proj.weight.shape[0], -1), proj.bias)   # [S, E]
        pos_embeds = (visual.pos_embed(pos_indices) * pos_weights[:, :, None]).sum(1)                    # [S, E]
        hidden = hidden + pos_embeds.to(hidden.dtype)
        cos, sin = visual.rotary_pos_emb(hidden, positions)                      # each [S, D]
        deepstack = []
        for index, block in enumerate(visual.blocks):
            hidden = hidden + masked_attention(block.attn, block.norm1(hidden), cos, sin, full_segments,
                                               model.num_heads)
            hidden = hidden + block.mlp(block.norm2(hidden))                     # [S, E]
            if index in model.deepstack_visual_indexes:
                merger = visual.deepstack_merger_list[model.deepstack_visual_indexes.index(index)]
                deepstack.append(merger(hidden))                                 # [S / merge_unit, out_hidden]
        return visual.merger(hidden), torch.stack(deepstack)                     # [T, O], [L, T, O]


#: The static wrapper of each encoder kind.
WRAPPERS = {"qwen2_vl": StaticVisual, "qwen2_5_vl": StaticVisual, "qwen3_vl": StaticQwen3Visual}
