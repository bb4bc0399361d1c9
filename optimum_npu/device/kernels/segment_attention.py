"""Attention within segments, flash-style: ``torch.ops.npu.segment_attention``.

Each position attends only to the positions of its own segment (an image, a frame, or a
window of a vision transformer; padding is a segment of its own). The kernel processes the
queries in row blocks, so the ``[H, S, S]`` score matrix is never materialised: on the
device the scores of a block stay in SRAM, and the cost model charges only q, k, v and
the output to DRAM.
"""

from __future__ import annotations

import torch
from torch.library import custom_op

QUERY_BLOCK = 1024


def segment_attention_kernel(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, segments: torch.Tensor,
                             scale: float) -> torch.Tensor:
    """query/key/value [H, S, D]; segments [S] int64 -> [H, S, D] (softmax in float32)."""
    out = torch.empty_like(query)
    for start in range(0, query.shape[1], QUERY_BLOCK):
        stop = start + QUERY_BLOCK
        same = segments[start:stop, None] == segments[None, :]                        # [b, S]
        scores = torch.matmul(query[:, start:stop], key.transpose(1, 2)) * scale     # [H, b, S]
        scores = scores.float().masked_fill(~same, float("-inf"))
        probs = torch.softmax(scores, dim=-1).to(query.dtype)
        out[:, start:stop] = torch.matmul(probs, value)                              # [H, b, D]
    return out


segment_attention = custom_op("npu::segment_attention", segment_attention_kernel, mutates_args=())


@segment_attention.register_fake
def _segment_attention_fake(query, key, value, segments, scale):
    return torch.empty_like(query)
