"""Replays a workload through the serving scheduler on the simulated clock.

Requests are handed to ``runtime.scheduler.Scheduler`` (the server's own) when the simulated clock
reaches their arrival; while nothing runs the clock jumps to the next arrival. A request's arrival time
is its workload time (not the end of the step during which it arrived), so TTFT includes the wait for the
step in flight. Each finished request is reduced to its times at once, so a 10,000-request replay keeps
only the requests in flight.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from optimum_npu.planner.serving_sim.cost_runner import dummy_choose
from optimum_npu.planner.workload import WorkloadRequest
from optimum_npu.runtime.request import Request, RequestTooLongError
from optimum_npu.runtime.scheduler import Scheduler
from optimum_npu.runtime.scheduler_stats import SchedulerStats
from optimum_npu.runtime.sequence import SamplingParams, Sequence


@dataclass(frozen=True)
class ServedRequest:
    """What one request saw: arrival, first token and finish on the simulated clock, and its token gaps."""

    index: int
    arrival_s: float
    first_token_s: float
    finished_s: float
    output_tokens: int
    itl_s: tuple[float, ...]
    preemptions: int

    @property
    def ttft_s(self) -> float:
        return self.first_token_s - self.arrival_s

    @property
    def e2e_s(self) -> float:
        return self.finished_s - self.arrival_s

    @property
    def tpot_s(self) -> float:
        """Mean time per output token after the first (0 for a one-token answer)."""
        return (self.finished_s - self.first_token_s) / (self.output_tokens - 1) if self.output_tokens > 1 else 0.0


@dataclass
class ReplayResult:
    """Every served request, the indexes of refused ones, the scheduler's counters and the KV usage samples."""

    served: list[ServedRequest]
    refused: list[int]
    stats: SchedulerStats
    makespan_s: float
    kv_usage_mean: float
    kv_usage_peak: float
    steps: int = 0
    prefix_hit_tokens: int = 0
    extra: dict = field(default_factory=dict)
    stopped: bool = False          # ended by ``stop`` before every request was served


def prompt_token_ids() -> "Callable[[int, WorkloadRequest], list[int]]":
    """A function giving a request's prompt token ids: its shared prefix (the same ids for the same
    ``prefix_id``) then ids no other request uses (so only shared prefixes can hit the prefix cache)."""
    bases: dict[str, int] = {}

    def ids(index: int, item: WorkloadRequest) -> list[int]:
        shared: list[int] = []
        if item.prefix_id is not None and item.prefix_tokens:
            base = bases.setdefault(item.prefix_id, 10**7 * (len(bases) + 1))
            shared = list(range(base, base + item.prefix_tokens))
        own = 10**13 + index * 10**7
        return shared + list(range(own, own + item.prompt_tokens - len(shared)))

    return ids


def replay(runner, requests: list[WorkloadRequest], max_num_batched_tokens: int | None = None,
           choose=dummy_choose, token_ids=None, stop: Callable[[ServedRequest], bool] | None = None) -> ReplayResult:
    """Serves ``requests`` (sorted by arrival) with a ``Scheduler`` over ``runner`` and returns what each saw.

    Args:
        runner: a ``StepRunner`` (real execution) or a ``CostOnlyRunner``.
        requests: the workload's requests.
        choose: picks each next token (the default appends a dummy token; a real run passes None: greedy).
        token_ids: ``(index, request) -> prompt token ids`` (default ``prompt_token_ids()``).
        stop: called with every served request; True ends the replay after the current step (``stopped``).
    """
    token_ids = token_ids or prompt_token_ids()
    served: list[ServedRequest] = []
    index_of: dict[int, int] = {}

    def on_finish(request: Request) -> None:
        times = request.token_times_s
        served.append(ServedRequest(index_of.pop(id(request)), request.arrival_s, request.first_token_s,
                                    request.finished_s, len(times),
                                    tuple(b - a for a, b in zip(times, times[1:])), request.preemptions))
        if stop is not None and stop(served[-1]):
            stopped.append(True)

    scheduler = Scheduler(runner, max_num_batched_tokens, on_finish=on_finish)
    pending = deque(sorted(enumerate(requests), key=lambda pair: pair[1].arrival_s))
    refused: list[int] = []
    stopped: list[bool] = []
    usage_sum = usage_peak = 0.0
    steps = 0
    while (pending or scheduler.has_work) and not stopped:
        while pending and pending[0][1].arrival_s <= scheduler.clock_s:
            index, item = pending.popleft()
            sampling = SamplingParams(max_new_tokens=item.output_tokens)
            request = Request(Sequence(index, token_ids(index, item), sampling=sampling), choose=choose)
            try:
                scheduler.add(request)
            except RequestTooLongError:
                refused.append(index)
                continue
            request.arrival_s = item.arrival_s
            index_of[id(request)] = index
        if not scheduler.has_work:
            if pending:
                scheduler.advance(pending[0][1].arrival_s - scheduler.clock_s)
            continue
        scheduler.step()
        steps += 1
        usage_sum += scheduler.kv_cache_usage
        usage_peak = max(usage_peak, scheduler.kv_cache_usage)
    served.sort(key=lambda r: r.index)
    start = min((r.arrival_s for r in requests), default=0.0)
    return ReplayResult(served, refused, scheduler.stats, scheduler.clock_s - start,
                        usage_sum / steps if steps else 0.0, usage_peak, steps,
                        getattr(runner.stats, "prefix_hit_tokens", 0), stopped=bool(stopped))
