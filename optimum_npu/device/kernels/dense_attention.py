"""Non-causal attention over a whole static bucket, flash-style: ``torch.ops.npu.dense_attention``.

The attention of diffusion models (UNet and SD3 transformer self- and cross-attention, the VAE's
mid-block attention) and of the text encoders (CLIP's causal mask, T5's position bias) is one node:
queries attend to every key, with an optional additive bias or boolean mask. No dropout and no
random state: the kernel is the device's arithmetic unit, so it computes exactly what PyTorch's
``scaled_dot_product_attention`` computes in inference. The cost model charges q, k, v, the bias and
the output to DRAM (score tiles stay on chip) and ``4 * B * H * S * L * D`` FLOPs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.library import custom_op


def dense_attention_kernel(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                           scale: float) -> torch.Tensor:
    """query [B, H, S, D]; key/value [B, H, L, D]; mask broadcastable to [B, H, S, L] (additive, or bool where
    True attends) or None -> [B, H, S, D]."""
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False,
                                          scale=scale)


dense_attention = custom_op("npu::dense_attention", dense_attention_kernel, mutates_args=())


@dense_attention.register_fake
def _dense_attention_fake(query, key, value, mask, scale):
    return torch.empty_like(query)
