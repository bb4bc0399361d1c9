"""Serving workloads for the SLO planner: when requests arrive and how long they are.

A workload is a JSON object (a file, or a dict), either **synthetic**::

    {"arrivals": {"process": "poisson", "rate": 4.0},      # or "gamma" with "cv" (coefficient of variation)
     "num_requests": 1000, "seed": 0,
     "prompt_tokens": {"dist": "lognormal", "median": 512, "sigma": 0.6, "min": 16, "max": 3000},
     "output_tokens": {"dist": "uniform", "min": 32, "max": 256},
     "shared_prefix": {"groups": 4, "tokens": 256}}       # optional: each prompt starts with one of 4 prefixes

or a **trace**: ``{"trace": "requests.jsonl"}`` (a path relative to the workload file), one JSON object per
line: ``{"arrival_s": 0.25, "prompt_tokens": 812, "output_tokens": 64}`` with optional ``"prefix_id"`` and
``"prefix_tokens"`` (requests with the same id share their first ``prefix_tokens`` prompt tokens).

Length distributions: ``fixed`` (``value``), ``uniform`` (``min``, ``max``, inclusive), ``lognormal``
(``median``, ``sigma`` of the log; optional ``min``/``max`` clamp) and ``histogram`` (``edges`` of n+1
increasing bin edges, ``counts`` of n non-negative weights; a value is drawn uniformly inside a bin).
Everything is validated on load; errors name the field, the value and what is allowed.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optimum_npu.planner.trace import load_trace
from optimum_npu.planner.workload_data import (MAX_REQUESTS, MAX_TOKENS, MAX_WORKLOAD_BYTES, Workload, WorkloadError,
                                               WorkloadRequest, check_number)

__all__ = ["LengthDist", "Workload", "WorkloadError", "WorkloadRequest", "load_workload"]

@dataclass(frozen=True)
class LengthDist:
    """A token-length distribution (module docstring)."""

    kind: str
    params: tuple

    @classmethod
    def parse(cls, where: str, data: Any) -> "LengthDist":
        if not isinstance(data, dict) or data.get("dist") not in ("fixed", "uniform", "lognormal", "histogram"):
            raise WorkloadError(f"{where}: must be an object with 'dist' one of fixed, uniform, lognormal, histogram "
                                f"(got {data!r:.80})")
        kind = data["dist"]
        if kind == "fixed":
            return cls(kind, (check_number(where, data, "value", 1, True),))
        if kind == "uniform":
            low, high = check_number(where, data, "min", 1, True), check_number(where, data, "max", 1, True)
            if high < low:
                raise WorkloadError(f"{where}: field 'max' = {high} must be >= 'min' = {low}")
            return cls(kind, (low, high))
        if kind == "lognormal":
            low = check_number(where, data, "min", 1, True, 1)
            high = check_number(where, data, "max", 1, True, MAX_TOKENS)
            return cls(kind, (check_number(where, data, "median", 1), check_number(where, data, "sigma", 0), low, high))
        edges, counts = data.get("edges"), data.get("counts")
        if (not isinstance(edges, list) or not isinstance(counts, list) or len(edges) != len(counts) + 1
                or not counts or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in edges + counts)
                or any(b <= a for a, b in zip(edges, edges[1:])) or edges[0] < 1 or min(counts) < 0
                or sum(counts) <= 0):
            raise WorkloadError(f"{where}: field 'edges'/'counts' must be n+1 increasing edges >= 1 and n "
                                "non-negative counts with a positive sum, e.g. edges [1, 128, 1024], counts [3, 1]")
        return cls(kind, (tuple(edges), tuple(counts)))

    def sample(self, rng: random.Random) -> int:
        if self.kind == "fixed":
            return self.params[0]
        if self.kind == "uniform":
            return rng.randint(*self.params)
        if self.kind == "lognormal":
            median, sigma, low, high = self.params
            return int(min(high, max(low, round(rng.lognormvariate(math.log(median), sigma)))))
        edges, counts = self.params
        index = rng.choices(range(len(counts)), weights=counts)[0]
        return max(1, int(rng.uniform(edges[index], edges[index + 1])))


def load_workload(source: str | Path | dict, num_requests: int | None = None) -> Workload:
    """Reads and validates a workload (module docstring); ``num_requests`` overrides a synthetic workload's count."""
    where, root = "workload", Path(".")
    if not isinstance(source, dict):
        path = Path(source)
        where, root = f"workload {str(path)!r}", path.parent
        if not path.is_file():
            raise WorkloadError(f"{where}: file not found; give a JSON workload file (see docs/capacity_planning.md)")
        if path.stat().st_size > MAX_WORKLOAD_BYTES:
            raise WorkloadError(f"{where}: larger than {MAX_WORKLOAD_BYTES} bytes")
        try:
            source = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise WorkloadError(f"{where}: not valid JSON ({err})") from None
    if not isinstance(source, dict):
        raise WorkloadError(f"{where}: must be a JSON object with 'arrivals' or 'trace'")
    if "trace" in source:
        trace = load_trace(where, root, source["trace"])
        return trace.head(num_requests) if num_requests else trace
    return _synthetic(where, source, num_requests)


def _synthetic(where: str, data: dict, num_requests: int | None) -> Workload:
    unknown = sorted(set(data) - {"arrivals", "num_requests", "seed", "prompt_tokens", "output_tokens",
                                  "shared_prefix", "description"})
    if unknown:
        raise WorkloadError(f"{where}: unknown fields {unknown}; allowed: arrivals, num_requests, seed, "
                            "prompt_tokens, output_tokens, shared_prefix, description")
    arrivals = data.get("arrivals")
    if not isinstance(arrivals, dict) or arrivals.get("process") not in ("poisson", "gamma"):
        raise WorkloadError(f"{where}: field 'arrivals' must be {{\"process\": \"poisson\" or \"gamma\", "
                            f"\"rate\": requests/s}} (got {arrivals!r:.80})")
    rate = check_number(f"{where} arrivals", arrivals, "rate", 1e-9)
    cv = check_number(f"{where} arrivals", arrivals, "cv", 1e-3, default=1.0) if arrivals["process"] == "gamma" else 1.0
    count = num_requests or check_number(where, data, "num_requests", 1, True, 1000)
    if count > MAX_REQUESTS:
        raise WorkloadError(f"{where}: field 'num_requests' = {count} exceeds {MAX_REQUESTS}")
    seed = check_number(where, data, "seed", 0, True, 0)
    prompt = LengthDist.parse(f"{where} prompt_tokens", data.get("prompt_tokens"))
    output = LengthDist.parse(f"{where} output_tokens", data.get("output_tokens"))
    groups = tokens = 0
    if data.get("shared_prefix") is not None:
        shared = data["shared_prefix"]
        if not isinstance(shared, dict):
            raise WorkloadError(f"{where}: field 'shared_prefix' must be {{\"groups\": n, \"tokens\": n}}")
        groups = check_number(f"{where} shared_prefix", shared, "groups", 1, True)
        tokens = check_number(f"{where} shared_prefix", shared, "tokens", 1, True)
    rng = random.Random(seed)
    shape = 1.0 / (cv * cv)
    clock, requests = 0.0, []
    for _ in range(count):   # unit-rate gaps (mean 1 s); at_rate scales them
        clock += rng.gammavariate(shape, 1.0 / shape)
        length = prompt.sample(rng)
        group = rng.randrange(groups) if groups else None
        requests.append(WorkloadRequest(clock, length + (tokens if groups else 0), output.sample(rng),
                                        None if group is None else f"prefix-{group}", tokens if groups else 0))
    base = tuple(WorkloadRequest(r.arrival_s / rate, r.prompt_tokens, r.output_tokens, r.prefix_id, r.prefix_tokens)
                 for r in requests)
    return Workload(base, rate, str(data.get("description", f"{arrivals['process']} arrivals at {rate:g} req/s")))
