"""Counters of a continuous-batching scheduler: tokens, preemptions, prefix-cache use, buckets and padding."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class SchedulerStats:
    """Cumulative figures since the scheduler started (read by metrics and benchmarks).

    ``padded_rows`` counts the decode rows that carried no sequence (a step of 3 sequences on the batch-4
    graph pads one row); ``padding_waste`` is their share of all decode rows run.
    """

    prompt_tokens: int = 0
    generation_tokens: int = 0
    prefill_tokens: int = 0
    preemptions: int = 0
    prefix_queries: int = 0
    prefix_hits: int = 0
    requests_finished: int = 0
    decode_rows: int = 0
    padded_rows: int = 0
    busy_s: float = 0.0
    buckets: Counter = field(default_factory=Counter)

    @property
    def padding_waste(self) -> float:
        """Share of decode rows that were padding (0.0 when no decode ran)."""
        return self.padded_rows / self.decode_rows if self.decode_rows else 0.0

    def to_dict(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "generation_tokens": self.generation_tokens,
                "prefill_tokens": self.prefill_tokens, "preemptions": self.preemptions,
                "prefix_queries": self.prefix_queries, "prefix_hits": self.prefix_hits,
                "requests_finished": self.requests_finished, "decode_rows": self.decode_rows,
                "padded_rows": self.padded_rows, "padding_waste": self.padding_waste,
                "busy_s": self.busy_s, "buckets": dict(self.buckets)}
