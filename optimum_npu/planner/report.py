"""Renders planner results: a side-by-side table (one column per configuration) or JSON."""

from __future__ import annotations

import json
from typing import Callable

from optimum_npu.device.memory import format_bytes
from optimum_npu.planner.planner import PlanResult

MEMORY_ROWS = (("weights", "weights"), ("kv_cache", "KV cache"), ("workspace", "workspace"),
               ("collective_buffers", "collective buffers"), ("total", "total"))


def to_json(results: list[PlanResult]) -> str:
    """A JSON list with one object per configuration (``PlanResult.to_dict``)."""
    return json.dumps([result.to_dict() for result in results], indent=1)


def _row(label: str, results: list[PlanResult], cell: Callable[[PlanResult], str]) -> list[str]:
    return [label] + [cell(r) if r.valid else "-" for r in results]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_table(results: list[PlanResult], title: str = "") -> str:
    """Compares the configurations side by side: memory per device, fit, TTFT, decode speed.

    Args:
        results: what ``plan`` returned.
        title: a first line (e.g. the model and the knobs).
    Returns:
        The table, then one line per invalid or non-fitting configuration saying why / what fits.
    """
    valid = [r for r in results if r.valid]
    rows = [["", *[f"TP={r.tensor_parallel_size}" + (f" EP={r.expert_parallel_size}" if r.expert_parallel_size > 1
                                                     else "") for r in results]],
            _row("fits in device memory", results, lambda r: "yes" if r.fits else "NO")]
    for key, label in MEMORY_ROWS:
        if any(key in r.memory_per_device_bytes for r in valid):
            rows.append(_row(f"{label} / device", results,
                             lambda r, k=key: format_bytes(r.memory_per_device_bytes.get(k, 0))))
    rows.append(_row("max_seq_len sequences that fit", results, lambda r: str(r.kv_sequences_that_fit)))
    prompts = sorted({p for r in valid for p in r.ttft_ms})
    for prompt in prompts:
        rows.append(_row(f"TTFT {prompt}-token prompt (ms)", results, lambda r, p=prompt: _ms(r.ttft_ms.get(p))))
    batches = sorted({b for r in valid for b in r.decode_ms_per_token})
    for batch in batches:
        rows.append(_row(f"decode batch {batch} (ms/token)", results,
                         lambda r, b=batch: _ms(r.decode_ms_per_token.get(b))))
    for batch in batches:
        rows.append(_row(f"throughput batch {batch} (tok/s)", results,
                         lambda r, b=batch: f"{r.tokens_per_s[b]:.1f}" if b in r.tokens_per_s else "-"))
    rows.append(_row("tok/s per device (largest batch)", results,
                     lambda r: f"{max(r.tokens_per_s.values()) / r.tensor_parallel_size:.1f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [title] if title else []
    for row in rows:
        lines.append("  ".join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]))
    if valid:
        sample = valid[0]
        lines.append(f"(per device of {sample.npu}, {format_bytes(sample.device_capacity_bytes)} each; decode at "
                     f"{sample.decode_context_len} tokens of context, every row of the batch busy)")
    for result in results:
        if not result.valid:
            lines.append(f"TP={result.tensor_parallel_size}: invalid: {result.error}")
        elif not result.fits:
            lines.append(f"TP={result.tensor_parallel_size}: does not fit "
                         f"({format_bytes(result.memory_per_device_bytes['total'])} per device); {result.suggestion}")
    return "\n".join(lines)
