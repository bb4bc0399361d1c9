"""The static-shape forwards of an encoder-decoder model, as captured per bucket.

- ``StaticSeq2SeqEncoder(input_ids [B, S], attention_bias [B, 1, 1, S])`` (Whisper:
  ``input_features [B, mels, frames]``) -> ``last_hidden_state [B, S, E]``: the HF encoder as it is, with
  the encoder family's attention (``encoder/wrapper.capture_attention``: float32 softmax, additive padding
  bias, T5's bidirectional relative position bias) and no dropout.
- ``StaticSeq2SeqDecoder(input_ids [B, S], positions [B, S], block_table [B, MB], slots [B],
  logits_index [B], caches..., encoder_hidden [B, L, E]?, encoder_mask [B, L]?)`` -> ``logits [B, V]``
  (and the alignment heads' cross-attention probabilities when compiled with them). Self-attention keys and
  values live in the paged pool (2 per layer); cross-attention keys/values (2 per layer) and the encoder mask
  (one, shared) live in per-slot caches, written by the prefill graph (which takes the encoder output) and read by
  the decode graphs.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Iterator

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.models.whisper.modeling_whisper import WhisperAttention

from optimum_npu.models.encoder.wrapper import encoder_attention
from optimum_npu.models.seq2seq.layers import (LAYERS, DecoderStep, Seq2SeqLayout, cross_attention, embed,
                                               module_at, self_attention, t5_position_bias)

#: Prefix of the HF model inside the wrappers; stripped so weights keep their checkpoint names.
WRAPPER_PREFIX = "model."


class StaticSeq2SeqEncoder(nn.Module):
    """The HF model's encoder returning its last hidden state."""

    def __init__(self, hf_model: PreTrainedModel, audio: bool):
        super().__init__()
        self.model = hf_model
        self.audio = audio

    def forward(self, features: torch.Tensor, attention_bias: torch.Tensor | None = None) -> torch.Tensor:
        encoder = self.model.get_encoder()
        if self.audio:
            return encoder(input_features=features, return_dict=True).last_hidden_state
        return encoder(input_ids=features, attention_mask=attention_bias, return_dict=True).last_hidden_state


def _whisper_encoder_attention(module: WhisperAttention, hidden_states: torch.Tensor,
                               attention_mask: torch.Tensor | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """Whisper's encoder self-attention with keys/values viewed ``[B, S, -1, D]`` like its queries (HF views them
    ``[B, -1, heads, D]``); the same arithmetic. hidden [B, S, E] -> ([B, S, E], None)."""
    if kwargs.get("key_value_states") is not None or kwargs.get("past_key_values") is not None:
        raise ValueError("the capture of Whisper's encoder attention takes its self-attention only")
    shape = (*hidden_states.shape[:-1], -1, module.head_dim)
    query = (module.q_proj(hidden_states) * module.scaling).view(shape).transpose(1, 2).contiguous()   # [B, H, S, D]
    key = module.k_proj(hidden_states).view(shape).transpose(1, 2).contiguous()
    value = module.v_proj(hidden_states).view(shape).transpose(1, 2).contiguous()
    out, _ = encoder_attention(module, query, key, value, attention_mask, scaling=1.0)           # [B, S, H, D]
    return module.out_proj(out.reshape(*hidden_states.shape[:-1], -1).contiguous()), None


@contextlib.contextmanager
def heads_without_counts(hf_model: PreTrainedModel) -> Iterator[None]:
    """While captured, every attention of the graphs views heads with ``-1`` (Whisper's encoder writes its head count
    into the key/value views; ``_whisper_encoder_attention`` does not), so a graph holds no head count and the
    tensor-parallel pass can give each rank its heads. The decoder's attentions are the NPU kernels already."""
    patched = [module for module in hf_model.modules() if isinstance(module, WhisperAttention)]
    try:
        for module in patched:
            module.forward = functools.partial(_whisper_encoder_attention, module)
        yield
    finally:
        for module in patched:
            del module.forward


def cache_names(num_layers: int) -> list[str]:
    """Per layer: the paged self-attention key/value pools and the cross-attention key/value slots; then the
    encoder mask of each slot (shared by every layer)."""
    return [f"{kind}_{layer}" for layer in range(num_layers)
            for kind in ("key_cache", "value_cache", "cross_key", "cross_value")] + ["cross_mask"]


class StaticSeq2SeqDecoder(nn.Module):
    """The HF model's decoder on the NPU kernels.

    Args:
        hf_model: the HF ``*ForConditionalGeneration`` model (modules and weights used as they are).
        layout: the architecture's module names (``layers.py``).
        partition_len: flash-attention partition of self-attention (0: eager).
        alignment_heads: (layer, head) pairs whose cross-attention probabilities are returned after the logits.
    """

    def __init__(self, hf_model: PreTrainedModel, layout: Seq2SeqLayout, partition_len: int = 0,
                 alignment_heads: tuple[tuple[int, int], ...] = ()):
        super().__init__()
        self.model = hf_model
        self.layout = layout
        self.partition_len = partition_len
        self.alignment_heads = alignment_heads
        decoder = hf_model.get_decoder()
        self.num_layers = len(module_at(decoder, layout.layers))
        first = module_at(module_at(decoder, layout.layers)[0], layout.self_attn)
        self.head_dim = getattr(first, "key_value_proj_dim", None) or first.head_dim
        self.scale = float(getattr(first, "scaling", 1.0))
        self.scale_output = layout.kind == "t5" and getattr(hf_model.config, "scale_decoder_outputs", False)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, block_table: torch.Tensor,
                slots: torch.Tensor, logits_index: torch.Tensor, caches: list[torch.Tensor],
                encoder_hidden: torch.Tensor | None = None, encoder_mask: torch.Tensor | None = None):
        layout, decoder = self.layout, self.model.get_decoder()
        context = block_table.shape[1] * caches[0].shape[2]                           # MB * BS keys
        bias = t5_position_bias(decoder, positions, context) if layout.kind == "t5" else None
        step = DecoderStep(positions, block_table, slots, bias, encoder_hidden, encoder_mask, self.partition_len)
        hidden = embed(decoder, layout, input_ids, positions)                          # [B, S, E]
        probs = []
        for i, layer in enumerate(module_at(decoder, layout.layers)):
            pool, cross = caches[4 * i:4 * i + 2], (*caches[4 * i + 2:4 * i + 4], caches[-1])
            attend_self = lambda x, layer=layer, pool=pool: self_attention(  # noqa: E731
                module_at(layer, layout.self_attn), layout, x, step, *pool, self.head_dim, self.scale)

            def attend_cross(x, layer=layer, cross=cross, i=i):
                out, p = cross_attention(module_at(layer, layout.cross_attn), layout, x, step, cross, self.head_dim,
                                         self.scale)
                probs.extend(p[:, head] for lay, head in self.alignment_heads if lay == i)   # [B, S, L] each
                return out

            hidden = LAYERS[layout.kind](layer, hidden, attend_self, attend_cross)
        rows = torch.arange(input_ids.shape[0])
        last = hidden[rows, logits_index]                                              # [B, E]
        if layout.final_norm:
            last = module_at(decoder, layout.final_norm)(last)
        if self.scale_output:
            last = last * (self.model.config.d_model ** -0.5)
        logits = module_at(self.model, layout.lm_head)(last)                           # [B, V]
        if hasattr(self.model, "final_logits_bias"):
            logits = logits + self.model.final_logits_bias
        if not self.alignment_heads:
            return logits
        return logits, torch.stack(probs, dim=1)                                       # [B, heads, S, L]
