"""Serving metrics of a replay and service-level objectives (SLOs) over them.

Definitions (all times on the simulated clock, tokens are **output** tokens unless stated):

* **TTFT**: arrival to the first generated token (queueing + every prefill chunk + the decode steps
  interleaved with them). **ITL**: the gap between consecutive output tokens of a request, pooled over
  all requests. **TPOT**: per request, (finish - first token) / (output tokens - 1). **E2E**: arrival to
  the last token. Percentiles p50/p90/p99 use the nearest-rank rule on the pooled values.
* **Throughput**: output tokens (and requests) per second of the replay's span (first arrival to last
  finish). **tokens/s/W**: throughput over (devices x TDP): TDP is the board's rated power from its
  datasheet, not a measured wall power.
* **Padding waste**: share of decode rows run on a bucket larger than the running batch (``SchedulerStats``).
  **Bucket histogram**: graph calls per compiled graph. **KV utilisation**: share of the paged pool's
  blocks held by running sequences, mean over scheduler steps and peak. **Preemptions**: recomputations.
* **Goodput** (``search.py``): the highest arrival rate whose replay meets every SLO term with no request
  refused, found by binary search on the rate.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from optimum_npu.planner.serving_sim.replay import ReplayResult

SLO_METRICS = ("ttft", "itl", "tpot", "e2e")
PERCENTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99}


class SLOError(ValueError):
    """An SLO string that cannot be read; the message names the term."""


def percentile(values, q: float) -> float:
    """Nearest-rank percentile (``q`` in [0, 1]); 0.0 for no values."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(q * len(ordered) - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def parse_slo(text: str) -> dict[str, float]:
    """``"ttft_p99=0.5,itl_p99=0.05"`` -> ``{"ttft_p99": 0.5, "itl_p99": 0.05}`` (seconds)."""
    allowed = [f"{m}_{p}" for m in SLO_METRICS for p in PERCENTILES]
    slo: dict[str, float] = {}
    for term in (t.strip() for t in str(text).split(",")):
        if not term:
            continue
        name, sep, value = term.partition("=")
        name = name.strip()
        if not sep or name not in allowed:
            raise SLOError(f"--slo term {term!r}: expected NAME=SECONDS with NAME one of {allowed}, "
                           "e.g. ttft_p99=0.5,itl_p99=0.05")
        try:
            seconds = float(value)
        except ValueError:
            seconds = float("nan")
        if not seconds > 0 or seconds == float("inf"):
            raise SLOError(f"--slo term {name}: value {value.strip()!r} must be a positive number of seconds")
        if name in slo:
            raise SLOError(f"--slo term {name} is given twice")
        slo[name] = seconds
    if not slo:
        raise SLOError(f"--slo is empty: give at least one term NAME=SECONDS with NAME one of {allowed}")
    return slo


@dataclass(frozen=True)
class ServingMetrics:
    """The figures of one replay (module docstring for the definitions)."""

    rate: float
    requests: int
    refused: int
    latency: dict[str, float]          # "ttft_p99" -> seconds, for every metric x percentile
    requests_per_s: float
    tokens_per_s: float
    padding_waste: float
    buckets: dict[str, int]
    kv_usage_mean: float
    kv_usage_peak: float
    preemptions: int
    prefix_hit_rate: float

    @classmethod
    def of(cls, replays: list[ReplayResult], rate: float) -> "ServingMetrics":
        """Merges the replays of every replica (each served its share of the requests)."""
        served = [r for replay in replays for r in replay.served]
        series = {"ttft": [r.ttft_s for r in served], "itl": [g for r in served for g in r.itl_s],
                  "tpot": [r.tpot_s for r in served], "e2e": [r.e2e_s for r in served]}
        latency = {f"{m}_{p}": percentile(values, q) for m, values in series.items() for p, q in PERCENTILES.items()}
        span = max((replay.makespan_s for replay in replays), default=0.0)
        tokens = sum(r.output_tokens for r in served)
        buckets: dict[str, int] = {}
        for replay in replays:
            for graph, count in replay.stats.buckets.items():
                buckets[graph] = buckets.get(graph, 0) + count
        rows = sum(replay.stats.decode_rows for replay in replays)
        queries = sum(replay.stats.prefix_queries for replay in replays)
        steps = sum(replay.steps for replay in replays) or 1
        return cls(rate, len(served), sum(len(replay.refused) for replay in replays), latency,
                   len(served) / span if span else 0.0, tokens / span if span else 0.0,
                   sum(replay.stats.padded_rows for replay in replays) / rows if rows else 0.0,
                   dict(sorted(buckets.items(), key=lambda kv: (kv[0] != "prefill", len(kv[0]), kv[0]))),
                   sum(replay.kv_usage_mean * replay.steps for replay in replays) / steps,
                   max((replay.kv_usage_peak for replay in replays), default=0.0),
                   sum(replay.stats.preemptions for replay in replays),
                   sum(replay.stats.prefix_hits for replay in replays) / queries if queries else 0.0)

    def meets(self, slo: dict[str, float]) -> bool:
        """Every SLO term met and no request refused."""
        return not self.refused and self.requests > 0 and all(self.latency[k] <= v for k, v in slo.items())

    def to_dict(self) -> dict:
        return asdict(self)
