"""The decoder layouts of the encoder-decoder architectures, as data plus one layer function each.

T5 (pre-norm RMS, relative position bias shared by every layer, unscaled scores), BART (post-norm,
learned positions offset by 2, scaled embeddings, final logits bias), Pegasus (pre-norm, sinusoidal position
table, scaled embeddings, final layer norm and logits bias) and Whisper (pre-norm, learned positions, final
layer norm). The HF modules are called as they are (weights keep their names);
only the attentions are replaced by the NPU kernels (``npu.paged_attention`` on the paged pool,
``npu.cross_attention`` on the per-slot encoder keys/values).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

import optimum_npu.device.kernels  # noqa: F401  (registers torch.ops.npu.*)


@dataclass(frozen=True)
class Seq2SeqLayout:
    """Module names of one architecture's decoder (relative to ``get_decoder()`` and its layers).

    Attributes:
        kind: the layer function (``LAYERS``) and the embedding recipe.
        layers: the list of decoder layers.
        self_attn / cross_attn: the attention modules of a layer (dotted, from the layer).
        q, k, v, o: the projections of an attention module.
        lm_head: the logits projection, from the top-level model.
        final_norm: the decoder's last norm ("" when none).
        position_offset: added to positions before the learned position table (BART: 2).
    """

    kind: str
    layers: str
    self_attn: str
    cross_attn: str
    q: str
    k: str
    v: str
    o: str
    lm_head: str
    final_norm: str = ""
    position_offset: int = 0


T5 = Seq2SeqLayout("t5", "block", "layer.0.SelfAttention", "layer.1.EncDecAttention", "q", "k", "v", "o", "lm_head",
                   "final_layer_norm")
BART = Seq2SeqLayout("bart", "layers", "self_attn", "encoder_attn", "q_proj", "k_proj", "v_proj", "out_proj", "lm_head",
                     position_offset=2)
PEGASUS = Seq2SeqLayout("pegasus", "layers", "self_attn", "encoder_attn", "q_proj", "k_proj", "v_proj", "out_proj",
                        "lm_head", "layer_norm")
WHISPER = Seq2SeqLayout("whisper", "layers", "self_attn", "encoder_attn", "q_proj", "k_proj", "v_proj", "out_proj",
                        "proj_out", "layer_norm")


@dataclass
class DecoderStep:
    """The per-call tensors every decoder layer reads."""

    positions: torch.Tensor           # [B, S], -1 = padding
    block_table: torch.Tensor         # [B, MB]
    slots: torch.Tensor               # [B]
    position_bias: torch.Tensor | None  # [B, H, S, MB * BS] (T5) or None
    encoder_hidden: torch.Tensor | None  # [B, L, E] at prefill (the cross keys/values are written), else None
    encoder_mask: torch.Tensor | None    # [B, L] float32 additive, with encoder_hidden
    partition_len: int


def module_at(root: nn.Module, path: str) -> nn.Module:
    for name in path.split(".") if path else ():
        root = root[int(name)] if name.isdigit() else getattr(root, name)
    return root


def _heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    """[B, S, H * D] -> [B, S, H, D]."""
    return x.view(*x.shape[:2], -1, head_dim)


def self_attention(attn: nn.Module, layout: Seq2SeqLayout, hidden: torch.Tensor, step: DecoderStep,
                   k_cache: torch.Tensor, v_cache: torch.Tensor, head_dim: int, scale: float) -> torch.Tensor:
    """Causal self-attention on the paged pool. hidden [B, S, E] -> [B, S, E]."""
    q, k, v = (_heads(module_at(attn, name)(hidden), head_dim) for name in (layout.q, layout.k, layout.v))
    out = torch.ops.npu.paged_attention(q, k, v, k_cache, v_cache, step.block_table, step.positions, scale,
                                        step.partition_len, 0.0, None, None, step.position_bias)   # [B, S, H, D]
    return module_at(attn, layout.o)(out.reshape(*hidden.shape[:2], -1))


def cross_attention(attn: nn.Module, layout: Seq2SeqLayout, hidden: torch.Tensor, step: DecoderStep,
                    caches: tuple[torch.Tensor, torch.Tensor, torch.Tensor], head_dim: int, scale: float
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention to the rows' encoder keys/values (projected and stored at prefill). -> ([B, S, E], probs)."""
    q = _heads(module_at(attn, layout.q)(hidden), head_dim)
    key = value = None
    if step.encoder_hidden is not None:
        key = _heads(module_at(attn, layout.k)(step.encoder_hidden), head_dim)      # [B, L, H, D]
        value = _heads(module_at(attn, layout.v)(step.encoder_hidden), head_dim)
    out, probs = torch.ops.npu.cross_attention(q, *caches, step.slots, scale, key, value, step.encoder_mask)
    return module_at(attn, layout.o)(out.reshape(*hidden.shape[:2], -1)), probs


Sublayer = Callable[[torch.Tensor], torch.Tensor]


def t5_layer(layer: nn.Module, hidden: torch.Tensor, attend_self: Sublayer, attend_cross: Sublayer) -> torch.Tensor:
    """T5 block: pre-norm self-attention, cross-attention, feed-forward (``layer[2]`` as it is)."""
    hidden = hidden + attend_self(layer.layer[0].layer_norm(hidden))
    hidden = hidden + attend_cross(layer.layer[1].layer_norm(hidden))
    return layer.layer[2](hidden)


def bart_layer(layer: nn.Module, hidden: torch.Tensor, attend_self: Sublayer, attend_cross: Sublayer) -> torch.Tensor:
    """BART: post-norm self-attention, cross-attention, fc1/act/fc2."""
    hidden = layer.self_attn_layer_norm(hidden + attend_self(hidden))
    hidden = layer.encoder_attn_layer_norm(hidden + attend_cross(hidden))
    return layer.final_layer_norm(hidden + layer.fc2(layer.activation_fn(layer.fc1(hidden))))


def whisper_layer(layer: nn.Module, hidden: torch.Tensor, attend_self: Sublayer,
                  attend_cross: Sublayer) -> torch.Tensor:
    """Whisper: pre-norm self-attention, cross-attention, fc1/act/fc2."""
    hidden = hidden + attend_self(layer.self_attn_layer_norm(hidden))
    hidden = hidden + attend_cross(layer.encoder_attn_layer_norm(hidden))
    return hidden + layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(hidden))))


LAYERS = {"t5": t5_layer, "bart": bart_layer, "whisper": whisper_layer, "pegasus": whisper_layer}   # both pre-norm


def t5_position_bias(decoder: nn.Module, positions: torch.Tensor, context: int) -> torch.Tensor:
    """T5's causal relative position bias of queries at ``positions`` [B, S] against keys 0..context-1:
    [B, H, S, context], from the first layer's bucket table (shared by every layer), with HF's own bucketing."""
    attn = decoder.block[0].layer[0].SelfAttention
    keys = torch.arange(context, device=positions.device)
    relative = keys[None, None, :] - positions.clamp(min=0)[:, :, None]              # [B, S, T]
    buckets = attn._relative_position_bucket(relative, bidirectional=False,
                                             num_buckets=attn.relative_attention_num_buckets,
                                             max_distance=attn.relative_attention_max_distance)
    return attn.relative_attention_bias(buckets).permute(0, 3, 1, 2)                # [B, H, S, T]


def embed(decoder: nn.Module, layout: Seq2SeqLayout, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Token (+ learned position) embeddings. [B, S] -> [B, S, E]."""
    hidden = decoder.embed_tokens(input_ids)                                         # BART scales inside
    if layout.kind == "t5":
        return hidden
    if layout.kind == "pegasus":                                                     # scaled here, not inside
        hidden = hidden * decoder.embed_scale
    table = decoder.embed_positions.weight
    hidden = hidden + nn.functional.embedding(positions.clamp(min=0) + layout.position_offset, table)
    return decoder.layernorm_embedding(hidden) if layout.kind == "bart" else hidden
