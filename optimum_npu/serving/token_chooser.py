"""The per-request next-token choice: Transformers' logits processors and warpers, plus OpenAI's presence and
frequency penalties (which Transformers does not have), a per-request seeded generator, and log-probabilities."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import (LogitsProcessorList, MinPLogitsWarper, RepetitionPenaltyLogitsProcessor,
                          TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

from optimum_npu.runtime import Sequence
from optimum_npu.serving.sampling_params import SamplingParams


@dataclass(frozen=True)
class TokenLogprob:
    """The chosen token's log-probability under the model and the most likely alternatives ``[(token, logprob)]``."""

    logprob: float
    top: tuple[tuple[int, float], ...]


class HFTokenChooser:
    """Chooses a sequence's next token as ``SamplingParams`` asks.

    Args:
        params: the request's sampling parameters.
        seed: this sequence's seed (the request's seed + the completion index), None for unseeded.
    """

    def __init__(self, params: SamplingParams, seed: int | None):
        self.params = params
        self.penalties = LogitsProcessorList()
        if params.repetition_penalty != 1.0:
            self.penalties.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
        self.warpers = LogitsProcessorList()
        if not params.greedy:
            self.warpers.append(TemperatureLogitsWarper(params.temperature))
            if params.top_k > 0:
                self.warpers.append(TopKLogitsWarper(params.top_k))
            if params.top_p < 1.0:
                self.warpers.append(TopPLogitsWarper(params.top_p))
            if params.min_p > 0:
                self.warpers.append(MinPLogitsWarper(params.min_p))
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def __call__(self, logits: torch.Tensor, seq: Sequence) -> tuple[int, TokenLogprob | None]:
        """Args: logits [V] of the next token; seq: the sequence so far. Returns the token and its logprob record."""
        scores = logits.float()[None]                                          # [1, V]
        ids = torch.tensor([seq.token_ids], dtype=torch.long)                  # [1, L]
        scores = self.penalties(ids, scores)
        scores = self._openai_penalties(scores, seq.output_ids)
        if self.params.greedy:
            token = int(torch.argmax(scores[0]))
        else:
            scores = self.warpers(ids, scores)
            token = int(torch.multinomial(torch.softmax(scores[0], dim=-1), 1, generator=self.generator))
        return token, self._logprob(logits, token)

    def _openai_penalties(self, scores: torch.Tensor, output: list[int]) -> torch.Tensor:
        presence, frequency = self.params.presence_penalty, self.params.frequency_penalty
        if not output or (presence == 0 and frequency == 0):
            return scores
        counts = torch.bincount(torch.tensor(output), minlength=scores.shape[-1])[:scores.shape[-1]].float()
        return scores - frequency * counts - presence * (counts > 0).float()

    def _logprob(self, logits: torch.Tensor, token: int) -> TokenLogprob | None:
        if self.params.logprobs is None:
            return None
        logprobs = torch.log_softmax(logits.float(), dim=-1)                    # [V]
        top = torch.topk(logprobs, self.params.logprobs) if self.params.logprobs else None
        pairs = tuple(zip(top.indices.tolist(), top.values.tolist())) if top is not None else ()
        return TokenLogprob(float(logprobs[token]), pairs)
