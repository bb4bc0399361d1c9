"""The static-shape forward of a decoder-only HF model, as captured into NPU graphs.

Every tensor the graph touches is explicit: token ids, absolute positions (``-1`` for
padding), the block table that maps each sequence to its KV-cache blocks, the index of
the token whose logits are wanted, and one key and one value cache tensor per layer.
The wrapper holds no state: the host runtime owns the caches and the block table.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from optimum_npu.models.decoder.blocks import pre_norm_decoder_layer
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


class StaticDecoder(nn.Module):
    """Wraps an HF ``*ForCausalLM`` with a static-shape, explicit-cache forward.

    Args:
        causal_lm: the HF model (its modules and weights are used as they are).
        model_config: the normalised config.
        arch: the registry entry of the architecture.
    """

    def __init__(self, causal_lm: nn.Module, model_config: DecoderModelConfig, arch: Architecture):
        super().__init__()
        self.lm = causal_lm
        base = causal_lm.model
        self._parts = _Parts(base.embed_tokens, base.layers, base.norm, causal_lm.lm_head, base.rotary_emb)
        self.head_dim = model_config.head_dim
        self.qk_norm = arch.qk_norm

    def forward(
        self,
        input_ids: torch.Tensor,        # [B, S] int64
        positions: torch.Tensor,        # [B, S] int64, -1 = padding
        block_table: torch.Tensor,      # [B, blocks_per_seq] int32
        logits_index: torch.Tensor,     # [B] int64: which of the S tokens to return logits for
        kv_cache: list[torch.Tensor],   # 2 x num_layers of [num_blocks, KVH, block_size, D]
    ) -> torch.Tensor:
        parts = self._parts
        hidden = parts.embed(input_ids)                                        # [B, S, E]
        cos, sin = parts.rotary(hidden, positions.clamp(min=0))               # [B, S, D]
        attention_kwargs = dict(cos=cos, sin=sin, block_table=block_table, positions=positions,
                                head_dim=self.head_dim, qk_norm=self.qk_norm)
        for i, layer in enumerate(parts.layers):
            attention_kwargs.update(k_cache=kv_cache[2 * i], v_cache=kv_cache[2 * i + 1])
            hidden = pre_norm_decoder_layer(layer, hidden, attention_kwargs)
        batch = input_ids.shape[0]
        last = hidden[torch.arange(batch), logits_index]                       # [B, E]
        return parts.lm_head(parts.norm(last))                                 # [B, V]
