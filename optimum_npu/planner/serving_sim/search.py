"""Goodput of a deployment at an SLO, and the cheapest deployment per NPU preset for a workload.

``simulate`` replays a workload at a rate on a deployment's replicas (requests dealt round-robin in
arrival order, one scheduler and KV pool per replica, all cost-only). ``goodput`` finds the highest rate
that meets the SLO by binary search between a light load and the saturation throughput (a replay with
every request arriving at once). ``cheapest`` picks, per preset, the deployment meeting the SLO at the
workload's own rate with the lowest cost (devices x price per device-hour, or devices without prices).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from optimum_npu.planner.serving_sim.candidates import Deployment
from optimum_npu.planner.serving_sim.cost_runner import CostOnlyRunner
from optimum_npu.planner.serving_sim.metrics import ServingMetrics, SLOWatch, StoppedProbe
from optimum_npu.planner.serving_sim.replay import replay
from optimum_npu.planner.workload import Workload
from optimum_npu.runtime.block_manager import BlockManager

SATURATION_RATE = 1e9     # requests/s: every request arrives at (almost) once
LIGHT_LOAD = 0.02         # share of the saturation throughput probed first
ITERATIONS = 7            # bisection steps: the goodput is within (1 - LIGHT_LOAD) / 2**7 ~ 0.8 % of saturation


def make_runner(deployment: Deployment) -> CostOnlyRunner:
    """A fresh cost-only runner (own KV pool) for one replica of ``deployment``."""
    c = deployment.candidate
    blocks = BlockManager(deployment.kv_blocks, deployment.block_size, c.prefix_caching, max_sequences=c.batch_size)
    return CostOnlyRunner(deployment.timings, blocks, c.max_seq_len, deployment.chunk, list(c.decode_buckets),
                          deployment.partition_len, c.npu, deployment.memo)


def simulate(deployment: Deployment, workload: Workload, rate: float, replicas: int = 1,
             slo: dict[str, float] | None = None, cache: dict | None = None) -> ServingMetrics | StoppedProbe:
    """Replays ``workload`` at ``rate`` requests/s over ``replicas`` copies of the deployment.

    With ``slo``, only the verdict is wanted: the replay stops as soon as it can no longer meet the SLO
    (``metrics.SLOWatch``) and returns a ``StoppedProbe``; a replay that meets it runs whole. ``cache``: a dict
    shared by the calls of one search (same workload), so a replay asked for twice runs once.
    """
    candidate = replace(deployment.candidate, replicas=1)
    whole = (candidate, rate, replicas, None)
    probe = (candidate, rate, replicas, tuple(sorted(slo.items()))) if slo else whole
    if cache is not None and (whole in cache or probe in cache):
        return cache.get(whole) or cache[probe]
    requests = workload.at_rate(rate)
    watch = SLOWatch(slo, [r.output_tokens for r in requests]) if slo else None
    replays = []
    for i in range(replicas):
        replays.append(replay(make_runner(deployment), requests[i::replicas], stop=watch and watch.missed_by))
        if replays[-1].stopped:
            result = StoppedProbe(rate, watch.missed)
            break
    else:
        result = ServingMetrics.of(replays, rate)
    if cache is not None:
        cache[whole if isinstance(result, ServingMetrics) else probe] = result
    return result


@dataclass
class Goodput:
    """The highest SLO-meeting rate, the metrics there (None when even a light load fails) and every probe."""

    rate: float
    at_goodput: ServingMetrics | None
    saturation: ServingMetrics
    probes: list[ServingMetrics | StoppedProbe] = field(default_factory=list)   # a missing probe may have stopped


def goodput(deployment: Deployment, workload: Workload, slo: dict[str, float], replicas: int = 1,
            cache: dict | None = None) -> Goodput:
    """Binary search on the arrival rate for the highest rate meeting ``slo`` (module docstring); ``cache`` as
    ``simulate``'s."""
    saturation = simulate(deployment, workload, SATURATION_RATE, replicas, cache=cache)
    result = Goodput(0.0, None, saturation)
    high = saturation.requests_per_s * 1.05
    low = high * LIGHT_LOAD
    if not high:
        return result
    for iteration in range(ITERATIONS + 1):
        rate = low if iteration == 0 else (low + high) / 2
        metrics = simulate(deployment, workload, rate, replicas, slo, cache)
        result.probes.append(metrics)
        if metrics.meets(slo):
            result.rate, result.at_goodput, low = rate, metrics, rate
        elif iteration == 0:
            return result
        else:
            high = rate
    return result


@dataclass
class Choice:
    """The deployment chosen for a preset: replicas to serve the workload's rate, its goodput and costs."""

    deployment: Deployment
    replicas: int
    goodput: Goodput
    at_rate: ServingMetrics
    cost_per_hour: float | None

    @property
    def devices(self) -> int:
        return self.deployment.candidate.tensor_parallel_size * self.replicas


def cheapest(scored: list[tuple[Deployment, Goodput]], workload: Workload, slo: dict[str, float],
             devices_per_node: int, price: float | None, cache: dict | None = None) -> Choice | None:
    """The cheapest deployment of one preset meeting ``slo`` at ``workload.rate`` (None if none does).

    ``scored`` holds each fitting deployment with its single-replica goodput; replicas are estimated as
    ``ceil(rate / goodput)`` and checked by replaying at the workload's rate (one more if it misses).
    """
    options = []
    for deployment, single in scored:
        if single.rate > 0:
            tp = deployment.candidate.tensor_parallel_size
            replicas = math.ceil(workload.rate / single.rate - 1e-9)
            if replicas * tp <= devices_per_node:
                options.append((replicas * tp, -single.rate, replicas, deployment))
    options.sort(key=lambda o: (o[0], o[1]))
    best = None
    for devices, _, replicas, deployment in options:
        if best is not None and devices > best.devices:
            break
        tp = deployment.candidate.tensor_parallel_size
        for count in (replicas, replicas + 1):
            if count * tp > devices_per_node or (best is not None and count * tp >= best.devices):
                break
            metrics = simulate(deployment, workload, workload.rate, count, slo, cache)
            if metrics.meets(slo):
                chosen = replace(deployment, candidate=replace(deployment.candidate, replicas=count))
                best = Choice(chosen, count, goodput(deployment, workload, slo, count, cache), metrics,
                              None if price is None else price * count * tp)
                break
    return best
