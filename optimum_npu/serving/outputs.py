"""What a request returns (vLLM's ``RequestOutput`` / ``CompletionOutput`` names), with the simulated timings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class CompletionOutput:
    """One completion of a prompt.

    Attributes:
        index: the completion's index among the ``n`` of its prompt.
        text: the generated text (a stop string is cut from it).
        token_ids: the generated token ids.
        finish_reason: ``"stop"``, ``"length"``, ``"abort"`` or None while running.
        logprobs: one ``TokenLogprob`` per token when requested.
        ttft_s: simulated time to the first token (arrival to first token, queueing included).
        itl_s: simulated gaps between consecutive tokens.
        preemptions: times the sequence was preempted and recomputed.
    """

    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None
    logprobs: list[Any] | None = None
    ttft_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    e2e_s: float | None = None
    preemptions: int = 0

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestOutput:
    """A prompt and its completions (in index order)."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    cached_tokens: int = 0

    @property
    def finished(self) -> bool:
        return all(o.finished for o in self.outputs)
