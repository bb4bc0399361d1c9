"""A request as the runtime sees it: token ids, sampling parameters, status and KV-cache progress."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import torch


class SequenceStatus(enum.Enum):
    """Where a sequence is in its life: waiting for blocks, running, preempted (recomputed later), finished."""

    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"
    FINISHED = "finished"


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen.

    Args:
        temperature: 0 for greedy; otherwise logits are divided by it before sampling.
        top_k: keep the k most likely tokens (0 keeps all).
        top_p: keep the smallest set of tokens whose probability reaches ``top_p`` (1.0 keeps all).
        seed: seeds the sequence's own random generator (None: unseeded).
        max_new_tokens: the sequence finishes after this many generated tokens.
        stop_token_ids: the sequence finishes after generating one of these.
    """

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    max_new_tokens: int = 16
    stop_token_ids: tuple[int, ...] = ()

    def __post_init__(self):
        if self.temperature < 0 or self.top_k < 0 or not 0 < self.top_p <= 1 or self.max_new_tokens < 1:
            raise ValueError(f"invalid sampling parameters {self}: temperature >= 0, top_k >= 0, 0 < top_p <= 1 "
                             "and max_new_tokens >= 1")


@dataclass(eq=False)
class Sequence:
    """One request.

    Args:
        request_id: the caller's id (the block manager keys its tables by it).
        token_ids: the prompt; generated tokens are appended.
        sampling: its sampling parameters.
        extras: per-token prefill inputs over the prompt for multimodal models (``rope_positions`` [3, n],
            ``visual_embeds`` [n, E], ``visual_mask`` [n], ``deepstack_embeds`` [L, n, E]).
        rope_delta: M-RoPE models: rotary position minus cache position of the generated tokens.
        request_inputs: per-request prefill inputs given whole (a batch axis of 1 added) to every prefill chunk
            (encoder-decoder models: the encoder output and its mask, from which the chunk writes the sequence's
            cross-attention keys/values).

    ``num_computed`` counts the tokens whose keys/values are in the KV cache; ``slot`` is the row the
    sequence holds in per-sequence device state (sliding-window rings), both set by the block manager.
    """

    request_id: Any
    token_ids: list[int]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    extras: dict[str, torch.Tensor] | None = None
    rope_delta: int | None = None
    request_inputs: dict[str, torch.Tensor] | None = None
    status: SequenceStatus = SequenceStatus.WAITING
    num_computed: int = 0
    slot: int | None = None

    def __post_init__(self):
        self.token_ids = list(self.token_ids)
        self.prompt_len = len(self.token_ids)
        if not self.prompt_len:
            raise ValueError(f"request {self.request_id!r} has an empty prompt; give at least one token")

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def output_ids(self) -> list[int]:
        """The generated tokens."""
        return self.token_ids[self.prompt_len:]

    @property
    def num_uncomputed(self) -> int:
        """Tokens not yet in the KV cache (a prefill writes them; a decode step writes the last one)."""
        return len(self.token_ids) - self.num_computed

    @property
    def is_finished(self) -> bool:
        return self.status == SequenceStatus.FINISHED

    def append(self, token: int) -> bool:
        """Adds a generated token; returns whether the sequence is done by its sampling parameters (a stop
        token or ``max_new_tokens``). Finishing it is the caller's decision (``StepRunner.finish``)."""
        token = int(token)
        self.token_ids.append(token)
        return (token in self.sampling.stop_token_ids
                or len(self.token_ids) - self.prompt_len >= self.sampling.max_new_tokens)   # output tokens, no copy
