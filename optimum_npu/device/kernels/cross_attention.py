"""Cross-attention over per-sequence encoder keys/values: ``torch.ops.npu.cross_attention``.

An encoder-decoder model's decoder attends to the encoder's output through keys and values
that do not change while the sequence decodes. They are computed once per sequence and kept on
the device in a cache indexed by the sequence's slot: ``[num_slots, heads, enc_len, head_dim]``
per layer, with an additive mask ``[num_slots, enc_len]`` (0 on encoder tokens, the dtype's
minimum on padding). A call that passes ``key`` / ``value`` / ``mask`` (the prefill of a sequence)
first writes them into the rows' slots, then attends; a decode call only reads. With
``return_probs`` the attention probabilities [B, H, S, enc_len] are returned too (Whisper's
alignment heads, for token timestamps).
"""

from __future__ import annotations

import torch
from torch.library import custom_op


def cross_attention_kernel(
    query: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    mask_cache: torch.Tensor,
    slots: torch.Tensor,
    scale: float,
    key: torch.Tensor | None = None,
    value: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """query [B, S, H, D]; caches [NS, H, L, D]; mask_cache [NS, L] float32; slots [B] int64;
    key/value [B, L, H, D] and mask [B, L] (written first when given). Returns (out [B, S, H, D],
    probs [B, H, S, L] float32)."""
    rows = slots.long()
    if key is not None:
        k_cache[rows] = key.transpose(1, 2).to(k_cache.dtype)                  # [B, H, L, D]
        v_cache[rows] = value.transpose(1, 2).to(v_cache.dtype)
        mask_cache[rows] = mask.to(mask_cache.dtype)
    keys, values = k_cache[rows].float(), v_cache[rows].float()                  # [B, H, L, D]
    q = query.transpose(1, 2).float()                                            # [B, H, S, D]
    scores = torch.matmul(q, keys.transpose(-1, -2)) * scale                     # [B, H, S, L]
    scores = scores + mask_cache[rows][:, None, None, :]
    probs = torch.softmax(scores, dim=-1)
    out = torch.matmul(probs, values).transpose(1, 2)                            # [B, S, H, D]
    return out.to(query.dtype).contiguous(), probs


cross_attention = custom_op("npu::cross_attention", cross_attention_kernel,
                            mutates_args=("k_cache", "v_cache", "mask_cache"))


@cross_attention.register_fake
def _cross_attention_fake(query, k_cache, v_cache, mask_cache, slots, scale, key=None, value=None, mask=None):
    batch, seq, heads, _ = query.shape
    return torch.empty_like(query), query.new_empty((batch, heads, seq, k_cache.shape[2]), dtype=torch.float32)
