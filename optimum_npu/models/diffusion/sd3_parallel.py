"""Tensor parallelism of the SD3 transformer: which weights split how, and a head-count-free joint attention.

The compile pass (``compile/tensor_parallel.py``) splits linears by these rules: the attention's q/k/v
projections of the image and the text stream and the feed-forward input projections keep 1/N of their output
features (1/N of the heads, of the MLP columns); the attention output projections and the feed-forward
output projections keep 1/N of their input features and are followed by an all-reduce. The final
projection ``proj_out`` is the plan's "logits" projection: each rank computes 1/N of its output features
and an all-gather joins them. Everything else (the timestep and text embeddings, AdaLN modulations, norms,
patch embedding) is replicated.

Diffusers' joint attention processor reshapes with the module's head count, which a rank no longer has
(it holds 1/N of the heads); ``HeadSplitJointAttention`` computes the same attention but reshapes by
sequence length and head size (``head_split``), so the captured graph is right for any number of heads per rank.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from optimum_npu.compile.tensor_parallel_plan import TensorParallelPlan, WeightSplit, module_regex
from optimum_npu.models.diffusion.head_split import merge_heads, split_heads, swapped_attention

COLUMN = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj",
          "ff.net.0.proj", "ff_context.net.0.proj")
ROW = ("attn.to_out.0", "attn.to_add_out", "ff.net.2", "ff_context.net.2")


def sd3_tensor_parallel_plan(size: int) -> TensorParallelPlan:
    """The split of an SD3 transformer over ``size`` devices (module docstring)."""
    rules = [(module_regex(f"transformer_blocks.*.{name}"), WeightSplit("colwise")) for name in COLUMN]
    rules += [(module_regex(f"transformer_blocks.*.{name}"), WeightSplit("rowwise")) for name in ROW]
    return TensorParallelPlan(size, tuple(rules), logits=("proj_out.weight",))


class HeadSplitJointAttention:
    """SD3's joint attention (image and text tokens attend together), reshaped by head size only."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        head_dim = attn.to_q.out_features // attn.heads
        image_tokens = hidden_states.shape[1]
        query, key, value = (split_heads(proj(hidden_states), head_dim) for proj in (attn.to_q, attn.to_k, attn.to_v))
        if attn.norm_q is not None:
            query, key = attn.norm_q(query), attn.norm_k(key)
        if encoder_hidden_states is not None:
            text = [split_heads(proj(encoder_hidden_states), head_dim)
                    for proj in (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj)]
            if attn.norm_added_q is not None:
                text[0], text[1] = attn.norm_added_q(text[0]), attn.norm_added_k(text[1])
            query, key, value = (torch.cat([a, b], dim=2) for a, b in zip((query, key, value), text))
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)   # [B, H, S, D]
        out = merge_heads(out).to(query.dtype)
        if encoder_hidden_states is None:
            return attn.to_out[0](out)
        image, text_out = out[:, :image_tokens], out[:, image_tokens:]
        if not attn.context_pre_only:
            text_out = attn.to_add_out(text_out)
        return attn.to_out[0](image), text_out


def head_split_attention(transformer):
    """``transformer`` with ``HeadSplitJointAttention`` in every attention while captured; restored after."""
    return swapped_attention(transformer, HeadSplitJointAttention())
