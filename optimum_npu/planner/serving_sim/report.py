"""The SLO search's summary table (printed) and ``report.md`` (with the plots)."""

from __future__ import annotations

from optimum_npu.device.memory import format_bytes
from optimum_npu.planner.serving_sim.power import TDP_WATTS

COLUMNS = ("NPU", "config", "devices", "goodput req/s", "tok/s", "tok/s/W", "$/M tok", "TTFT p99 ms",
           "ITL p99 ms", "E2E p99 ms", "padding", "KV util", "preempt")


def summary_rows(outcomes: dict) -> list[list[str]]:
    """One row per preset: its cheapest SLO-meeting deployment, or why none was found."""
    rows = []
    for npu, outcome in outcomes.items():
        choice = outcome.choice
        if choice is None:
            rows.append([npu, outcome.why_none, "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-"])
            continue
        g = choice.goodput
        at = g.at_goodput or choice.at_rate
        watts = TDP_WATTS.get(npu, (None,))[0]
        per_watt = f"{at.tokens_per_s / (choice.devices * watts):.2f}" if watts else "n/a"
        cost = (f"{choice.cost_per_hour / (at.tokens_per_s * 3600) * 1e6:.3f}"
                if choice.cost_per_hour is not None and at.tokens_per_s else "-")
        rows.append([npu, choice.deployment.candidate.label().split(" ", 1)[1], str(choice.devices),
                     f"{g.rate:.2f}", f"{at.tokens_per_s:.0f}", per_watt, cost,
                     f"{at.latency['ttft_p99'] * 1e3:.0f}", f"{at.latency['itl_p99'] * 1e3:.1f}",
                     f"{at.latency['e2e_p99'] * 1e3:.0f}", f"{at.padding_waste:.1%}", f"{at.kv_usage_mean:.1%}",
                     str(at.preemptions)])
    return rows


def format_summary(outcomes: dict) -> str:
    """The summary as aligned text columns."""
    rows = [list(COLUMNS), *summary_rows(outcomes)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in
                               enumerate(zip(row, widths))) for row in rows)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                      *("| " + " | ".join(row) + " |" for row in rows)])


def write_markdown(result, plots: dict[str, str]) -> str:
    """``report.md``: the question, the answer table, the plots, every candidate and the definitions."""
    slo = ", ".join(f"{k} <= {v * 1e3:g} ms" for k, v in result.slo.items())
    lines = [f"# Serving plan: {result.model}", "",
             f"Workload: {result.workload.description}; {len(result.workload.base)} requests replayed per probe "
             f"(rate {result.workload.rate:g} req/s). SLO: {slo}.", "",
             "Cheapest deployment per NPU preset that meets the SLO at the workload's rate (goodput: highest rate "
             "meeting the SLO; tok/s, latencies, padding, KV utilisation and preemptions at that goodput; tok/s/W "
             "over the devices' rated TDP, not wall power):", "",
             markdown_table(list(COLUMNS), summary_rows(result.outcomes)), ""]
    for title, name in (("Latency against request rate", "latency_rate"), ("Memory per device", "memory"),
                        ("Decode bucket histogram", "buckets")):
        if name in plots:
            lines += [f"## {title}", "", f"![{title}]({plots[name]})", ""]
    lines += ["## Every candidate", "",
              markdown_table(["candidate", "fits", "memory / device", "KV blocks", "goodput req/s (1 replica)",
                              "saturation tok/s"],
                             [[d.candidate.label(), "yes" if d.fits else "no: " + d.reason,
                               format_bytes(sum(d.memory.values())) if d.memory else "-", str(d.kv_blocks or "-"),
                               f"{g.rate:.2f}" if g else "-", f"{g.saturation.tokens_per_s:.0f}" if g else "-"]
                              for d, g in result.scored]), "",
              "Definitions: docs/capacity_planning.md (TTFT, ITL, TPOT, E2E over output tokens; goodput by "
              "binary search on the rate). Power figures: " +
              "; ".join(f"{npu}: {watts:g} W ({source})" for npu, (watts, source) in TDP_WATTS.items()
                        if npu in result.outcomes), ""]
    return "\n".join(lines)
