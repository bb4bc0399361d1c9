"""Sentence embeddings on a compiled encoder: length-sorted batches, mean pooling, L2 normalisation.

Sorting the texts by token count before batching puts short texts together, so each batch runs on a
short sequence bucket instead of the one its longest neighbour in the input order would need; on a
compiled model the batches are also cut where the sequence bucket changes, so no text is padded to a
longer bucket than its own.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch


def mean_pool(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """[B, S, H] hidden states, [B, S] mask -> [B, H] mean over the real tokens (unit length when ``normalize``)."""
    weights = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
    pooled = (last_hidden_state * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1) if normalize else pooled


def sentence_embeddings(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 32,
                        sort_by_length: bool = True, max_length: int | None = None) -> torch.Tensor:
    """Normalised mean-pooled embeddings [len(texts), hidden] of ``texts``, in their order.

    Args:
        model: a feature-extraction model (``NPUModelForFeatureExtraction`` or an eager HF encoder).
        tokenizer: its tokenizer.
        batch_size: texts per forward call (the NPU model splits a call larger than its largest batch bucket).
        sort_by_length: batch texts of similar token counts together (less padding, shorter buckets).
        max_length: truncate texts to this many tokens (default: refuse texts longer than the model's buckets).
    """
    lengths = [len(ids) for ids in tokenizer(list(texts), truncation=max_length is not None,
                                             max_length=max_length)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: lengths[i]) if sort_by_length else list(range(len(texts)))
    out = [None] * len(texts)
    for chosen in _batches(order, lengths, batch_size, getattr(getattr(model, "npu_config", None), "seq_lens", None)):
        inputs = tokenizer([texts[i] for i in chosen], padding=True, truncation=max_length is not None,
                           max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**inputs).last_hidden_state
        for index, vector in zip(chosen, mean_pool(hidden, inputs["attention_mask"])):
            out[index] = vector
    return torch.stack(out)


def _batches(order: list[int], lengths: list[int], batch_size: int, seq_lens: Sequence[int] | None) -> list[list[int]]:
    """``order`` cut into batches of at most ``batch_size``, and (with ``seq_lens``) wherever the bucket changes."""
    def bucket(index: int) -> int:
        return next((s for s in sorted(seq_lens or ()) if s >= lengths[index]), 0)

    runs: list[list[int]] = []
    for index in order:
        if not runs or len(runs[-1]) == batch_size or (seq_lens and bucket(runs[-1][-1]) != bucket(index)):
            runs.append([])
        runs[-1].append(index)
    return runs
