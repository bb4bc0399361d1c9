"""The data a workload is made of (requests, the workload, its error) and the field checks its readers share."""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_WORKLOAD_BYTES = 64 << 20
MAX_REQUESTS = 1_000_000
MAX_TOKENS = 1 << 20


class WorkloadError(ValueError):
    """A workload file or dict that cannot be used; the message names the field."""


@dataclass(frozen=True)
class WorkloadRequest:
    """One request of a workload: arrival time (s), prompt and output lengths, optional shared prefix."""

    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    prefix_id: str | None = None
    prefix_tokens: int = 0


def check_number(where: str, data: dict, key: str, low: float = 0.0, integer: bool = False, default=None) -> float:
    """``data[key]`` (or ``default``) checked to be a finite number (an integer if asked) >= ``low``."""
    value = data.get(key, default)
    if value is None:
        raise WorkloadError(f"{where}: field '{key}' is missing")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low \
            or (integer and value != int(value)):
        kind = "an integer" if integer else "a number"
        raise WorkloadError(f"{where}: field '{key}' = {value!r} must be {kind} >= {low}")
    return int(value) if integer else float(value)


@dataclass(frozen=True)
class Workload:
    """Unit-rate requests (``base``) and the rate they were given at; ``at_rate`` rescales arrival times."""

    base: tuple[WorkloadRequest, ...]
    rate: float
    description: str

    def at_rate(self, rate: float) -> list[WorkloadRequest]:
        """The requests with arrival times scaled so they come at ``rate`` requests/s on average."""
        scale = self.rate / rate
        return [WorkloadRequest(r.arrival_s * scale, r.prompt_tokens, r.output_tokens, r.prefix_id, r.prefix_tokens)
                for r in self.base]

    @property
    def max_total_tokens(self) -> int:
        return max(r.prompt_tokens + r.output_tokens for r in self.base)

    @property
    def has_shared_prefixes(self) -> bool:
        return any(r.prefix_id is not None for r in self.base)

    def head(self, count: int) -> "Workload":
        """The first ``count`` requests (same rate)."""
        return Workload(self.base[:count], self.rate, self.description)
