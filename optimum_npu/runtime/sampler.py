"""Next-token choice from logits: greedy, temperature, top-k and top-p, each sequence with its own seed."""

from __future__ import annotations

import torch

from optimum_npu.runtime.sequence import SamplingParams


class Sampler:
    """Chooses one token per row of logits; a seeded sequence draws from its own generator.

    Generators are kept per request id, so a seeded request gives the same tokens however it is batched.
    """

    def __init__(self):
        self._generators: dict[object, torch.Generator] = {}

    def sample(self, logits: torch.Tensor, params: list[SamplingParams], request_ids: list | None = None) -> list[int]:
        """Args:
            logits: [n, V] next-token logits.
            params: the sampling parameters of each row.
            request_ids: each row's request (keys its seeded generator); row indices when None.
        Returns:
            The chosen token of each row.
        """
        request_ids = list(range(len(params))) if request_ids is None else request_ids
        return [self._one(row.float(), p, rid) for row, p, rid in zip(logits, params, request_ids)]

    def forget(self, request_id) -> None:
        """Drops a finished request's generator."""
        self._generators.pop(request_id, None)

    def _one(self, logits: torch.Tensor, params: SamplingParams, request_id) -> int:
        if params.temperature == 0 or params.top_k == 1:
            return int(torch.argmax(logits))
        logits = logits / params.temperature
        if params.top_k:
            kth = torch.topk(logits, min(params.top_k, logits.numel())).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if params.top_p < 1.0:
            ordered, index = torch.sort(logits, descending=True)
            probs = torch.softmax(ordered, dim=-1)
            drop = torch.cumsum(probs, dim=-1) - probs >= params.top_p      # keep the smallest set reaching top_p
            logits = logits.scatter(0, index, ordered.masked_fill(drop, float("-inf")))
        generator = None
        if params.seed is not None:
            generator = self._generators.get(request_id)
            if generator is None:
                generator = self._generators[request_id] = torch.Generator().manual_seed(params.seed)
        return int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator))
