"""A request as the scheduler serves it: one ``Sequence`` plus how its tokens are chosen and when they came.

Times are on the **simulated clock** of the scheduler (seconds of NPU time since it started; see
``Scheduler``), with the host's wall-clock times beside them for the server's own latency metrics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from optimum_npu.runtime.sequence import Sequence

#: ``choose(logits [V], seq) -> (token, logprob record or None)``: picks the next token of a sequence.
TokenChooser = Callable[[torch.Tensor, Sequence], "tuple[int, Any]"]
#: ``stop_check(seq) -> bool``: whether the tokens so far end the request (stop strings).
StopCheck = Callable[[Sequence], bool]


class RequestTooLongError(ValueError):
    """A request that can never be served: longer than ``max_seq_len`` or than the whole KV pool."""

    def __init__(self, message: str, prompt_tokens: int, max_tokens: int, limit: int):
        super().__init__(message)
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.limit = limit


@dataclass(eq=False)
class Request:
    """One sequence being served.

    Args:
        seq: the sequence (its ``sampling.max_new_tokens`` and ``stop_token_ids`` end it).
        choose: picks each next token; the runtime ``Sampler`` (by ``seq.sampling``) when None.
        stop_check: called after each token; True finishes the request with reason ``"stop"``.

    Attributes:
        arrival_s / first_token_s / token_times_s / finished_s: simulated-clock times.
        wall_arrival / wall_token_times: ``time.monotonic()`` of the same events on the host.
        logprobs: what ``choose`` returned beside each token.
        finish_reason: ``"stop"`` (stop token or string), ``"length"`` (max tokens or max_seq_len), ``"abort"``.
        preemptions: how many times the request lost its blocks and was recomputed.
        cached_tokens: prompt tokens found in the prefix cache at its (last) admission.
    """

    seq: Sequence
    choose: TokenChooser | None = None
    stop_check: StopCheck | None = None
    arrival_s: float = 0.0
    first_token_s: float | None = None
    finished_s: float | None = None
    token_times_s: list[float] = field(default_factory=list)
    wall_arrival: float = field(default_factory=time.monotonic)
    wall_token_times: list[float] = field(default_factory=list)
    logprobs: list[Any] = field(default_factory=list)
    finish_reason: str | None = None
    preemptions: int = 0
    cached_tokens: int = 0
    prefilled: bool = False

    @property
    def request_id(self):
        return self.seq.request_id

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def ttft_s(self) -> float | None:
        """Simulated time from arrival to the first generated token."""
        return None if self.first_token_s is None else self.first_token_s - self.arrival_s

    @property
    def itl_s(self) -> list[float]:
        """Simulated gaps between consecutive generated tokens."""
        times = self.token_times_s
        return [later - earlier for earlier, later in zip(times, times[1:])]

    @property
    def e2e_s(self) -> float | None:
        """Simulated time from arrival to the end of the request."""
        return None if self.finished_s is None else self.finished_s - self.arrival_s
