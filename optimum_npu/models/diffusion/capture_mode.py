"""What changes while a Diffusers or text-encoder module is captured (and is restored after).

- ``torch.nn.functional.scaled_dot_product_attention`` becomes ``npu.dense_attention`` (one node per
  attention: the device kernel computes the same thing; no dropout argument, no random state);
- dropout modules become identities (inference: they would otherwise be captured as ``aten.dropout``).

Diffusers' attention processors and Transformers' ``sdpa`` attention both call the function through the
``torch.nn.functional`` module, so replacing it there reaches every attention of UNets, SD3 transformers,
VAEs, CLIP and T5 encoders.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

import optimum_npu.device.kernels  # noqa: F401  (registers torch.ops.npu.dense_attention)


def _dense_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    if dropout_p or enable_gqa or is_causal:
        raise ValueError("a captured attention asked for dropout, grouped-query attention or is_causal (the models "
                         "compiled here pass explicit masks); compile the model in eval mode")
    scale = scale if scale is not None else 1.0 / math.sqrt(query.shape[-1])
    return torch.ops.npu.dense_attention(query, key, value, attn_mask, scale)


@contextlib.contextmanager
def capture_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` with NPU attention and without dropout while captured; everything restored on exit."""
    dropouts = [(parent, name, child) for parent in module.modules()
                for name, child in parent.named_children() if isinstance(child, nn.Dropout)]
    original = F.scaled_dot_product_attention
    try:
        for parent, name, _ in dropouts:
            setattr(parent, name, nn.Identity())
        F.scaled_dot_product_attention = _dense_attention
        yield module
    finally:
        F.scaled_dot_product_attention = original
        for parent, name, child in dropouts:
            setattr(parent, name, child)
