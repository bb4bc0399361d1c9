"""The static-shape forward of a decoder-only HF model, as captured into NPU graphs.

Every tensor the graph touches is explicit: token ids, absolute positions (``-1`` for
padding), the block table that maps each sequence to its KV-cache blocks, the batch slot
of each row, the index of the token whose logits are wanted, and one key and one value
cache tensor per layer (a paged block pool for global layers, a ring for sliding layers).
The wrapper holds no state: the host runtime owns the caches and the block table.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from optimum_npu.models.decoder.blocks import LAYER_BLOCKS, AttentionLayout, StepInputs, self_attention
from optimum_npu.models.model_config import DecoderModelConfig
from optimum_npu.models.registry import Architecture

#: Prefix of the HF model inside the wrapper; stripped so weight names match the HF checkpoint.
HF_PREFIX = "lm."


@dataclass
class _Parts:
    embed: nn.Module
    layers: nn.ModuleList
    norm: nn.Module
    lm_head: nn.Module
    rotary: nn.Module


def attention_layouts(model: DecoderModelConfig, arch: Architecture, max_seq_len: int,
                      partition_len: int) -> list[AttentionLayout]:
    """One layout per layer. A sliding window at least ``max_seq_len`` long is plain causal attention."""
    layouts = []
    for layer in range(model.num_layers):
        window = model.ring_window(layer, max_seq_len)
        layouts.append(AttentionLayout(
            head_dim=model.head_dim, qk_norm=arch.qk_norm, scale=model.attention_scale,
            softcap=model.attn_logit_softcapping or 0.0, partition_len=0 if window else partition_len,
            window=window))
    return layouts


class StaticDecoder(nn.Module):
    """Wraps an HF ``*ForCausalLM`` with a static-shape, explicit-cache forward.

    Args:
        causal_lm: the HF model (its modules and weights are used as they are).
        model_config: the normalised config.
        arch: the registry entry of the architecture.
        layouts: the attention layout of each layer (see ``attention_layouts``).
    """

    def __init__(self, causal_lm: nn.Module, model_config: DecoderModelConfig, arch: Architecture,
                 layouts: list[AttentionLayout]):
        super().__init__()
        self.lm = causal_lm
        base = causal_lm
        for attribute in arch.text_model.split("."):
            base = getattr(base, attribute)
        self._parts = _Parts(base.embed_tokens, base.layers, base.norm, causal_lm.lm_head, base.rotary_emb)
        self.layouts = layouts
        self.layer_types = model_config.layer_types
        self.rope_per_layer_type = arch.rope_per_layer_type
        self.layer_block = LAYER_BLOCKS[arch.block]
        self.final_softcap = model_config.final_logit_softcapping
        self.mrope = arch.mrope

    def _rope(self, hidden: torch.Tensor, positions: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        if not self.rope_per_layer_type:
            rope = self._parts.rotary(hidden, positions)
            return {layer_type: rope for layer_type in set(self.layer_types)}
        return {layer_type: self._parts.rotary(hidden, positions, layer_type) for layer_type in set(self.layer_types)}

    def forward(
        self,
        input_ids: torch.Tensor,        # [B, S] int64
        positions: torch.Tensor,        # [B, S] int64, -1 = padding
        block_table: torch.Tensor,      # [B, blocks_per_seq] int32
        slots: torch.Tensor,            # [B] int64: batch slot of each row
        logits_index: torch.Tensor,     # [B] int64: which of the S tokens to return logits for
        kv_cache: list[torch.Tensor],   # 2 per layer: paged pool [NB, KVH, BS, D] or ring [slots, KVH, W, D]
        rope_positions: torch.Tensor | None = None,  # [3, B, S] M-RoPE positions (multimodal models)
        visual_embeds: torch.Tensor | None = None,   # [B, S, E] embeddings replacing the image tokens'
        visual_mask: torch.Tensor | None = None,     # [B, S] bool: which tokens take visual_embeds
        deepstack_embeds: torch.Tensor | None = None,  # [L, B, S, E] added at visual_mask after layer l < L
    ) -> torch.Tensor:
        parts = self._parts
        hidden = parts.embed(input_ids)                                        # [B, S, E]
        if visual_embeds is not None:
            hidden = torch.where(visual_mask[..., None], visual_embeds.to(hidden.dtype), hidden)
        rope_input = rope_positions if self.mrope else positions.clamp(min=0)
        ropes = self._rope(hidden, rope_input)                                 # each [B, S, D]
        for i, layer in enumerate(parts.layers):
            cos, sin = ropes[self.layer_types[i]]
            step = StepInputs(cos, sin, positions, block_table, slots)
            attention = partial(self_attention, layer.self_attn, layout=self.layouts[i], step=step,
                                k_cache=kv_cache[2 * i], v_cache=kv_cache[2 * i + 1])
            hidden = self.layer_block(layer, hidden, attention)
            if deepstack_embeds is not None and i < deepstack_embeds.shape[0]:   # DeepStack (Qwen3-VL)
                hidden = torch.where(visual_mask[..., None], hidden + deepstack_embeds[i].to(hidden.dtype), hidden)
        batch = input_ids.shape[0]
        last = hidden[torch.arange(batch), logits_index]                       # [B, E]
        logits = parts.lm_head(parts.norm(last))                               # [B, V]
        if self.final_softcap:
            logits = torch.tanh(logits / self.final_softcap) * self.final_softcap
        return logits
