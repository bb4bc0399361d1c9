"""``plan_serving``: for a workload and an SLO, the cheapest deployment per NPU preset, with plots and a report."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from optimum_npu.device.spec import resolve_spec
from optimum_npu.planner.serving_sim.candidates import (DEFAULT_BUCKET_SETS, QUANTIZATIONS, Deployment,
                                                        build_deployments)
from optimum_npu.planner.serving_sim.metrics import ServingMetrics
from optimum_npu.planner.serving_sim.search import Choice, Goodput, cheapest, goodput, simulate
from optimum_npu.planner.workload import Workload

CURVE_POINTS = (0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25)


@dataclass
class Outcome:
    """One preset's answer: the chosen deployment, or why there is none."""

    choice: Choice | None
    why_none: str = ""
    curve: list[ServingMetrics] = field(default_factory=list)


@dataclass
class ServingPlan:
    model: str
    workload: Workload
    slo: dict[str, float]
    outcomes: dict[str, Outcome]
    scored: list[tuple[Deployment, Goodput | None]]


def default_max_seq_len(workload: Workload) -> int:
    """The smallest power of two (>= 1024) that holds the workload's longest request."""
    return max(1024, 2 ** math.ceil(math.log2(workload.max_total_tokens)))


def score(deployments: list[Deployment], workload: Workload, slo: dict[str, float], cache: dict | None = None):
    """Each deployment with its single-replica goodput; those that do not fit get None and are never replayed."""
    return [(d, goodput(d, workload, slo, cache=cache) if d.fits else None) for d in deployments]


def plan_serving(model, workload: Workload, slo: dict[str, float], npus: list[str], quantizations=("none",),
                 batch_sizes=(16, 64), max_seq_lens=None, tensor_parallel_sizes=(1, 2, 4, 8),
                 prefix_caching=None, prices: dict[str, float] | None = None,
                 bucket_sets=DEFAULT_BUCKET_SETS) -> ServingPlan:
    """Searches the grid (``candidates.build_deployments``), scores every fitting candidate's single-replica goodput,
    and picks the cheapest deployment per preset (``search.cheapest``).

    Args:
        model: a built-in shape, a ``config.json`` or a model directory (as ``optimum-npu plan``).
        workload: the requests (``planner.workload``); its rate is the one to serve.
        slo: ``{"ttft_p99": seconds, ...}`` (``metrics.parse_slo``).
        npus: preset names or spec files; quantizations: keys of ``candidates.QUANTIZATIONS``.
        prefix_caching: options to compare (default: both when the workload has shared prefixes, else off).
        prices: preset -> price per device-hour (any currency): ranks by cost, else by devices.
        bucket_sets: names of the decode bucket sets compared (``candidates.BUCKET_SETS``).
    """
    unknown = sorted(set(quantizations) - set(QUANTIZATIONS))
    if unknown:
        raise ValueError(f"--quantization {unknown} unknown; choose from {sorted(QUANTIZATIONS)}")
    specs = {name: resolve_spec(name) for name in npus}
    caching = prefix_caching or ([False, True] if workload.has_shared_prefixes else [False])
    lengths = list(max_seq_lens or [default_max_seq_len(workload)])
    deployments = build_deployments(model, list(npus), list(quantizations), list(batch_sizes), lengths,
                                    list(tensor_parallel_sizes), caching, workload.max_total_tokens,
                                    bucket_set_names=tuple(bucket_sets))
    cache: dict = {}       # replays shared by the scoring, the choice and the curves (search.simulate)
    scored = score(deployments, workload, slo, cache)
    outcomes = {}
    for name, spec in specs.items():
        mine = [(d, g) for d, g in scored if d.candidate.npu == spec.name and g is not None]
        choice = cheapest(mine, workload, slo, spec.devices_per_node, (prices or {}).get(name), cache)
        why = "" if choice else ("no candidate fits in memory" if not mine else
                                 f"no deployment within one {spec.devices_per_node}-device node meets the SLO at "
                                 f"{workload.rate:g} req/s")
        curve = []
        if choice is not None and choice.goodput.rate:
            curve = [simulate(choice.deployment, workload, choice.goodput.rate * f, choice.replicas, cache=cache)
                     for f in CURVE_POINTS]
        outcomes[name] = Outcome(choice, why, curve)
    return ServingPlan(str(model), workload, slo, outcomes, scored)


def write_outputs(result: ServingPlan, out: Path) -> list[Path]:
    """Writes ``report.md`` and the PNG plots into ``out`` (created); returns the files written."""
    from optimum_npu.planner.serving_sim.plots import bucket_plot, latency_rate_plot, memory_plot
    from optimum_npu.planner.serving_sim.report import write_markdown

    out.mkdir(parents=True, exist_ok=True)
    chosen = {name: o.choice for name, o in result.outcomes.items() if o.choice is not None}
    label = {name: f"{name}: {c.deployment.candidate.label().split(' ', 1)[1]}" for name, c in chosen.items()}
    plots: dict[str, str] = {}
    written = []
    if chosen:
        curves = {label[n]: result.outcomes[n].curve for n in chosen if result.outcomes[n].curve}
        for name, path, draw in (
                ("latency_rate", out / "latency_rate.png", lambda p: latency_rate_plot(curves, result.slo, p,
                                                                                  result.workload.rate)),
                ("memory", out / "memory.png", lambda p: memory_plot(
                    {label[n]: (c.deployment.memory, c.deployment.capacity) for n, c in chosen.items()}, p)),
                ("buckets", out / "buckets.png", lambda p: bucket_plot(
                    {label[n]: (c.goodput.at_goodput or c.at_rate).buckets for n, c in chosen.items()}, p))):
            if name == "latency_rate" and not curves:
                continue
            written.append(_atomic(path, draw))
            plots[name] = path.name
    report = out / "report.md"
    written.append(_atomic(report, lambda p: p.write_text(write_markdown(result, plots))))
    return written


def _atomic(path: Path, write) -> Path:
    """Writes through a temporary name, so no half-written file is left behind."""
    partial = path.with_name(path.name + ".partial" + path.suffix)
    write(partial)
    partial.replace(path)
    return path
