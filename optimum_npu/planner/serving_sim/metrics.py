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
    return ordered[percentile_rank(q, len(ordered)) - 1]


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


#: A served request's value of each per-request metric (ITL is per token gap).
PER_REQUEST = {"ttft": lambda r: r.ttft_s, "tpot": lambda r: r.tpot_s, "e2e": lambda r: r.e2e_s}


def percentile_rank(q: float, count: int) -> int:
    """The 1-based rank ``percentile`` reads among ``count`` sorted values."""
    return min(max(1, math.ceil(q * count - 1e-9)), count)


class SLOWatch:
    """Decides, while a replay runs, that it cannot meet an SLO any more, so the rest need not be simulated.

    The p-th percentile of ``n`` values exceeds a bound exactly when more than ``n - rank`` of them do
    (``percentile_rank``). The counts are known before the replay: every served request yields one TTFT, TPOT
    and E2E value and ``output_tokens - 1`` ITL gaps (a cost-only request always generates its workload's
    output length), so once a term has more violations than that, the verdict of the whole replay is "misses".

    Args:
        slo: ``{"ttft_p99": seconds, ...}``.
        output_tokens: the output length of every request the replay (all replicas together) serves.
    """

    def __init__(self, slo: dict[str, float], output_tokens: list[int]):
        counts = {"ttft": len(output_tokens), "tpot": len(output_tokens), "e2e": len(output_tokens),
                  "itl": sum(n - 1 for n in output_tokens)}
        self.terms = []
        for name, bound in slo.items():
            metric, p = name.split("_")
            self.terms.append([metric, bound, counts[metric] - percentile_rank(PERCENTILES[p], counts[metric]), 0])
        self.missed: str | None = None     # the first term found missed

    def missed_by(self, request) -> bool:
        """Counts ``request``'s values (a ``replay.ServedRequest``); True once some term can no longer be met."""
        for term in self.terms:
            metric, bound = term[0], term[1]
            if metric == "itl":
                term[3] += sum(1 for gap in request.itl_s if gap > bound)
            else:
                term[3] += PER_REQUEST[metric](request) > bound
            if term[3] > term[2] and self.missed is None:
                self.missed = f"{metric}: {term[3]} values above {bound:g} s, at most {term[2]} allowed"
        return self.missed is not None


@dataclass(frozen=True)
class StoppedProbe:
    """A replay ended early because it could no longer meet the SLO (``SLOWatch``): it misses it."""

    rate: float
    missed: str

    def meets(self, slo: dict[str, float]) -> bool:
        return False


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
