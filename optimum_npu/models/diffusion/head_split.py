"""Attention captured without the module's head count, so one graph serves every tensor-parallel rank.

Diffusers' attention processors reshape q/k/v with ``attn.heads``; a rank of an N-way split holds 1/N of the
heads, so a graph captured that way would be wrong on it. The processors swapped in while a denoiser is
captured compute the same attention but reshape by head size and sequence length only (the number of heads
is ``-1``): after the compiler narrows q/k/v to a rank's heads, shape propagation gives every node its
per-rank shape. ``HeadSplitAttention`` is the self / cross attention of Diffusers' ``BasicTransformerBlock``
(UNet transformer blocks); ``sd3_parallel.HeadSplitJointAttention`` is SD3's joint attention.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
import torch.nn.functional as F


def split_heads(tensor: torch.Tensor, head_dim: int) -> torch.Tensor:
    """[B, S, heads * head_dim] -> [B, heads, S, head_dim] (heads inferred)."""
    batch, seq, _ = tensor.shape
    return tensor.view(batch, seq, -1, head_dim).transpose(1, 2)


def merge_heads(tensor: torch.Tensor) -> torch.Tensor:
    """[B, heads, S, head_dim] -> [B, S, heads * head_dim]."""
    batch, _, seq, _ = tensor.shape
    return tensor.transpose(1, 2).reshape(batch, seq, -1)


class HeadSplitAttention:
    """Self or cross attention over [B, S, C] tokens (Diffusers' ``AttnProcessor2_0`` for transformer blocks)."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        if attention_mask is not None or attn.spatial_norm is not None or attn.group_norm is not None or \
                hidden_states.ndim != 3:
            raise ValueError("the head-split attention captures transformer-block attention over [batch, tokens, "
                             "channels] without masks or spatial / group norms; this attention has one of them")
        head_dim = attn.to_q.out_features // attn.heads
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        query = split_heads(attn.to_q(hidden_states), head_dim)
        key, value = split_heads(attn.to_k(context), head_dim), split_heads(attn.to_v(context), head_dim)
        query = attn.norm_q(query) if attn.norm_q is not None else query
        key = attn.norm_k(key) if attn.norm_k is not None else key
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)   # [B, H, S, D]
        out = attn.to_out[1](attn.to_out[0](merge_heads(out).to(query.dtype)))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


@contextlib.contextmanager
def swapped_attention(model, processor, where: Callable[[str], bool] = lambda name: True) -> Iterator[None]:
    """``model`` with ``processor`` in every attention whose processor name ``where`` accepts; restored after."""
    previous = dict(model.attn_processors)
    try:
        model.set_attn_processor({name: processor if where(name) else kept for name, kept in previous.items()})
        yield
    finally:
        model.set_attn_processor(previous)
