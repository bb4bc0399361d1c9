"""How close a compiled model's next-token predictions are to a reference's, over a fixed token stream.

Used to measure what quantization costs (``bench/bench_quantization.py``, ``tests/test_quantization_quality.py``):
the compiled model is teacher-forced through the stream (one prefill of the first token, then one decode
step per token, as ``generate()`` runs them), and its next-token distributions are compared with the
reference's at every position.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Agreement:
    """Next-token agreement of a model with a reference over a stream.

    Attributes:
        top1: share of positions where both predict the same most likely next token.
        kl: mean KL divergence KL(reference || model) of the next-token distributions, in nats.
        positions: positions compared.
    """

    top1: float
    kl: float
    positions: int


def stream_logits(model, token_ids: list[int]) -> torch.Tensor:
    """Next-token logits [T, V] (float32) of a compiled ``NPUModelForCausalLM`` after each token of the stream."""
    ids = torch.tensor([token_ids])
    rows = [model(input_ids=ids[:, :1], npu_phase="prefill").logits[0, -1]]
    try:
        for end in range(2, len(token_ids) + 1):
            rows.append(model(input_ids=ids[:, :end], npu_phase="decode").logits[0, -1])
    finally:
        model._finish_sequences()
    return torch.stack(rows).float()


def reference_logits(hf_model, token_ids: list[int]) -> torch.Tensor:
    """Next-token logits [T, V] (float32) of an eager Transformers model after each token of the stream."""
    with torch.no_grad():
        return hf_model(torch.tensor([token_ids])).logits[0].float()


def agreement(reference: torch.Tensor, logits: torch.Tensor) -> Agreement:
    """Top-1 agreement and mean KL(reference || logits) of two [T, V] logit tensors."""
    same = (reference.argmax(-1) == logits.argmax(-1)).float().mean().item()
    ref_log = torch.log_softmax(reference.double(), -1)
    log = torch.log_softmax(logits.double(), -1)
    kl = (ref_log.exp() * (ref_log - log)).sum(-1).mean().item()
    return Agreement(same, kl, reference.shape[0])
