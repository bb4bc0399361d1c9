"""The static-shape forward of a decoder-only HF model, as captured into NPU graphs.

Every tensor the graph touches is explicit: token ids, absolute positions (``-1`` for
padding), the block table that maps each sequence to its KV-cache blocks, the batch slot
of each row, the index of the token whose logits are wanted, and one key and one value
cache tensor per layer (a paged block pool for global layers, a ring for sliding layers).
The wrapper holds no state: the host runtime owns the caches and the block table. Which HF
modules it calls, and how, is the architecture's adapter (``models/adapters``).
"""

from __future__ import annotations

import dataclasses
from functools import partial
from types import SimpleNamespace

import torch
from torch import nn

from optimum_npu.models.decoder.blocks import AttentionLayout, StepInputs, self_attention
from optimum_npu.models.decoder.layers import LAYER_BLOCKS, MLPS
from optimum_npu.models.decoder.moe import MoERouting
from optimum_npu.models.model_config import DecoderModelConfig
from optimum_npu.models.registry import Architecture

#: Prefix of the HF model inside the wrapper; stripped so weight names match the HF checkpoint.
HF_PREFIX = "lm."


def attention_layouts(model: DecoderModelConfig, arch: Architecture, max_seq_len: int,
                      partition_len: int) -> list[AttentionLayout]:
    """One layout per layer. A sliding window at least ``max_seq_len`` long is plain causal attention."""
    layouts = []
    for layer in range(model.num_layers):
        window = model.ring_window(layer, max_seq_len)
        layouts.append(AttentionLayout(
            head_dim=model.head_dim, qk_norm=False, scale=model.attention_scale,
            softcap=model.attn_logit_softcapping or 0.0, partition_len=0 if window else partition_len,
            window=window, groups=model.num_heads // model.num_kv_heads))
    return layouts


def module_at(root: nn.Module, path: str, arch: Architecture) -> nn.Module:
    """``root.<path>``, or a ValueError naming the path the architecture's adapter expects."""
    module = root
    for attribute in path.split(".") if path else ():
        if not hasattr(module, attribute):
            raise ValueError(f"{type(root).__name__} has no module {path!r}, which the {arch.name} adapter reads; "
                             f"export a {arch.name} model (with its language-model head)")
        module = getattr(module, attribute)
    return module


class StaticDecoder(nn.Module):
    """Wraps an HF ``*ForCausalLM`` with a static-shape, explicit-cache forward.

    Args:
        causal_lm: the HF model (its modules and weights are used as they are).
        model_config: the normalised config.
        arch: the registry entry of the architecture (its adapter names the modules).
        layouts: the attention layout of each layer (see ``attention_layouts``).
    """

    def __init__(self, causal_lm: nn.Module, model_config: DecoderModelConfig, arch: Architecture,
                 layouts: list[AttentionLayout]):
        super().__init__()
        self.lm = causal_lm
        adapter = self.adapter = arch.adapter
        base = module_at(causal_lm, adapter.text_model, arch)
        # a plain namespace, not submodules: the weights keep their names under ``lm.``
        self._parts = SimpleNamespace(
            embed=module_at(base, adapter.embed, arch), layers=module_at(base, adapter.layers, arch),
            norm=module_at(base, adapter.final_norm, arch), lm_head=module_at(causal_lm, adapter.lm_head, arch),
            positions=module_at(base, adapter.positions.module, arch))
        attention = [getattr(layer, adapter.attention.module) for layer in self._parts.layers]
        self.layouts = [dataclasses.replace(layout, qk_norm=all(hasattr(attn, n) for n in adapter.attention.qk_norm))
                        for layout, attn in zip(layouts, attention)]
        self.layer_types = model_config.layer_types
        self.layer_block = LAYER_BLOCKS[adapter.block]
        self.mlp = MLPS[adapter.mlp.kind]
        self.mlp_spec = adapter.mlp if adapter.moe is None else MoERouting(
            adapter.mlp.module, adapter.moe, model_config.experts_per_token, model_config.normalize_topk,
            model_config.swiglu_alpha, model_config.swiglu_limit)
        self.final_softcap = model_config.final_logit_softcapping

    def _rope(self, hidden: torch.Tensor, positions: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        spec = self.adapter.positions
        if spec.kind != "rotary":
            return {layer_type: (None, None) for layer_type in set(self.layer_types)}
        rotary = self._parts.positions
        if spec.per_layer_type:
            return {layer_type: rotary(hidden, positions, layer_type) for layer_type in set(self.layer_types)}
        rope = rotary(hidden, positions)
        if spec.half_width:                                                # [B, S, D/2] -> [B, S, D]
            rope = tuple(torch.cat((t, t), dim=-1) for t in rope)
        return {layer_type: rope for layer_type in set(self.layer_types)}

    def _layer(self, i: int, layer: nn.Module, hidden: torch.Tensor, step: StepInputs,
               kv_cache: list[torch.Tensor]) -> torch.Tensor:
        adapter = self.adapter
        attention = partial(self_attention, getattr(layer, adapter.attention.module), layout=self.layouts[i],
                            step=step, k_cache=kv_cache[2 * i], v_cache=kv_cache[2 * i + 1],
                            spec=adapter.attention, linear=adapter.linear)
        mlp = partial(self.mlp, layer, self.mlp_spec, adapter.linear)
        return self.layer_block(hidden, [getattr(layer, name) for name in adapter.norms], attention, mlp)

    def forward(
        self,
        input_ids: torch.Tensor,        # [B, S] int64
        positions: torch.Tensor,        # [B, S] int64, -1 = padding
        block_table: torch.Tensor,      # [B, blocks_per_seq] int32
        slots: torch.Tensor,            # [B] int64: batch slot of each row
        logits_index: torch.Tensor,     # [B] int64: which of the S tokens to return logits for ([B, K]: K of them)
        kv_cache: list[torch.Tensor],   # 2 per layer: paged pool [NB, KVH, BS, D] or ring [slots, KVH, W, D]
        rope_positions: torch.Tensor | None = None,  # [3, B, S] M-RoPE positions (multimodal models)
        visual_embeds: torch.Tensor | None = None,   # [B, S, E] embeddings replacing the image tokens'
        visual_mask: torch.Tensor | None = None,     # [B, S] bool: which tokens take visual_embeds
        deepstack_embeds: torch.Tensor | None = None,  # [L, B, S, E] added at visual_mask after layer l < L
    ) -> torch.Tensor:
        hidden = self._parts.embed(input_ids)                                  # [B, S, E]
        if visual_embeds is not None:
            hidden = torch.where(visual_mask[..., None], visual_embeds.to(hidden.dtype), hidden)
        if self.adapter.positions.kind == "learned":                           # absolute position table
            table = self._parts.positions.weight
            hidden = hidden + nn.functional.embedding(positions.clamp(min=0) + self.adapter.positions.offset, table)
        rope_input = rope_positions if self.adapter.positions.mrope else positions.clamp(min=0)
        ropes = self._rope(hidden, rope_input)                                 # each [B, S, R] or None
        for i, layer in enumerate(self._parts.layers):
            cos, sin = ropes[self.layer_types[i]]
            step = StepInputs(cos, sin, positions, block_table, slots)
            hidden = self._layer(i, layer, hidden, step, kv_cache)
            if deepstack_embeds is not None and i < deepstack_embeds.shape[0]:   # DeepStack (Qwen3-VL)
                hidden = torch.where(visual_mask[..., None], hidden + deepstack_embeds[i].to(hidden.dtype), hidden)
        batch = input_ids.shape[0]
        rows = torch.arange(batch).view(-1, *([1] * (logits_index.dim() - 1)))  # [B] or [B, 1]
        last = hidden[rows, logits_index]                                      # [B, E] or [B, K, E]
        logits = self._parts.lm_head(self._parts.norm(last))                   # [B, V] or [B, K, V]
        if self.final_softcap:
            logits = torch.tanh(logits / self.final_softcap) * self.final_softcap
        return logits
