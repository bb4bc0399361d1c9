"""Whisper's token timestamps from the compiled decoder: the alignment heads' cross-attention probabilities that
the prefill and decode graphs return after the logits (compiled with ``npu_config={"token_timestamps": True}``),
laid out as Whisper's ``generate()`` reads ``cross_attentions`` (per step, per layer ``[B, heads, S, L]``)."""

from __future__ import annotations

from typing import Any

import torch

from optimum_npu.models.decoder.npu_config import NPUConfigError
from optimum_npu.models.decoder.stored_config import short_repr

#: The Whisper compile knob that adds the alignment heads' cross-attention to the decoder graphs.
TOKEN_TIMESTAMPS_KNOB = "token_timestamps"


def pop_token_timestamps(npu_config: Any) -> tuple[Any, bool]:
    """``npu_config`` without the ``token_timestamps`` knob, and whether it asks for the alignment heads."""
    if not isinstance(npu_config, dict) or TOKEN_TIMESTAMPS_KNOB not in npu_config:
        return npu_config, False
    wanted = npu_config[TOKEN_TIMESTAMPS_KNOB]
    if not isinstance(wanted, bool):
        raise NPUConfigError(f"token_timestamps={short_repr(wanted)} is invalid: use True (compile the alignment "
                             "heads' cross-attention for return_token_timestamps) or False")
    return {key: value for key, value in npu_config.items() if key != TOKEN_TIMESTAMPS_KNOB}, wanted


def compiled_alignment_heads(hf_model: Any) -> tuple[tuple[int, int], ...]:
    """The (layer, head) pairs of ``hf_model.generation_config.alignment_heads``, checked against its decoder."""
    heads = getattr(hf_model.generation_config, "alignment_heads", None)
    layers, per_layer = hf_model.config.decoder_layers, hf_model.config.decoder_attention_heads
    if not isinstance(heads, list) or not heads or any(
            not isinstance(pair, (list, tuple)) or len(pair) != 2
            or any(not isinstance(v, int) or isinstance(v, bool) for v in pair)
            or not (0 <= pair[0] < layers and 0 <= pair[1] < per_layer) for pair in heads):
        raise NPUConfigError(f"token_timestamps=True needs generation_config.alignment_heads as [layer, head] pairs "
                             f"within {layers} decoder layers x {per_layer} heads, got {short_repr(heads)}; set "
                             "them (Whisper checkpoints ship them) or compile without token_timestamps")
    return tuple((layer, head) for layer, head in heads)


def graph_head_order(heads: tuple[tuple[int, int], ...], num_layers: int) -> list[tuple[int, int]]:
    """The order of the heads in the graphs' second output (by layer, then as compiled; see ``wrapper.py``)."""
    return [pair for layer in range(num_layers) for pair in heads if pair[0] == layer]


def step_weights(records: list[tuple[int, int, tuple]], rows: int, prompt_len: int | None) -> torch.Tensor:
    """The alignment weights of one generation step [B, n_heads, S, L] from the runner's records of its graph
    calls ``(tokens, active, (probs,))``: prefill (``prompt_len`` given) = each row's chunks [1, n, chunk, L] in
    row order; decode = one call [batch, n, 1, L]."""
    if prompt_len is None:
        tokens, active, (probs,) = records[-1]
        return probs[:rows].float()
    per_row, current, filled = [], [], 0
    for tokens, _, (probs,) in records:
        current.append(probs[0, :, :tokens])                                   # [n, tokens, L]
        filled += tokens
        if filled == prompt_len:
            per_row.append(torch.cat(current, dim=1))
            current, filled = [], 0
    return torch.stack(per_row).float()                                         # [B, n, P, L]


def as_cross_attentions(weights: torch.Tensor, order: list[tuple[int, int]], num_layers: int,
                        num_heads: int) -> tuple[torch.Tensor, ...]:
    """Per decoder layer ``[B, heads, S, L]`` as Transformers returns ``cross_attentions``: the compiled alignment
    heads hold their probabilities, every other head is NaN (not computed; nothing should read it)."""
    layers = [weights.new_full((weights.shape[0], num_heads, *weights.shape[2:]), float("nan"))
              for _ in range(num_layers)]
    for index, (layer, head) in enumerate(order):
        layers[layer][:, head] = weights[:, index]
    return tuple(layers)
