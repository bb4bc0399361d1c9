"""Trace workloads: one JSON object per line (``workload.py`` documents the fields)."""

from __future__ import annotations

import json
from pathlib import Path

from optimum_npu.planner.workload_data import (MAX_REQUESTS, MAX_TOKENS, MAX_WORKLOAD_BYTES, Workload,
                                               WorkloadError, WorkloadRequest, check_number)

TRACE_FIELDS = {"arrival_s", "prompt_tokens", "output_tokens", "prefix_id", "prefix_tokens"}


def load_trace(where: str, root: Path, name) -> Workload:
    """Reads a JSON-lines trace at ``name`` (relative to ``root``, the workload file's folder)."""
    if not isinstance(name, str) or not name:
        raise WorkloadError(f"{where}: field 'trace' must be the path of a JSON-lines file")
    path = Path(name) if Path(name).is_absolute() else root / name
    where = f"{where} trace {str(path)!r}"
    if not path.is_file():
        raise WorkloadError(f"{where}: file not found")
    if path.stat().st_size > MAX_WORKLOAD_BYTES:
        raise WorkloadError(f"{where}: larger than {MAX_WORKLOAD_BYTES} bytes")
    requests = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        here = f"{where} line {number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise WorkloadError(f"{here}: not valid JSON ({err.msg})") from None
        if not isinstance(item, dict):
            raise WorkloadError(f"{here}: must be a JSON object with arrival_s, prompt_tokens, output_tokens")
        unknown = sorted(set(item) - TRACE_FIELDS)
        if unknown:
            raise WorkloadError(f"{here}: unknown fields {unknown}; allowed: {sorted(TRACE_FIELDS)}")
        prompt = check_number(here, item, "prompt_tokens", 1, True)
        output = check_number(here, item, "output_tokens", 1, True)
        if prompt + output > MAX_TOKENS:
            raise WorkloadError(f"{here}: prompt_tokens + output_tokens = {prompt + output} exceeds {MAX_TOKENS}")
        prefix_id = item.get("prefix_id")
        if prefix_id is not None and (not isinstance(prefix_id, (str, int)) or isinstance(prefix_id, bool)):
            raise WorkloadError(f"{here}: field 'prefix_id' = {prefix_id!r} must be a string or an integer")
        prefix_tokens = check_number(here, item, "prefix_tokens", 0, True, 0)
        if prefix_tokens > prompt or (prefix_tokens and prefix_id is None):
            raise WorkloadError(f"{here}: field 'prefix_tokens' = {prefix_tokens} needs a 'prefix_id' and must be "
                                f"<= prompt_tokens = {prompt}")
        requests.append(WorkloadRequest(check_number(here, item, "arrival_s", 0), prompt, output,
                                        None if prefix_id is None else str(prefix_id), prefix_tokens))
        if len(requests) > MAX_REQUESTS:
            raise WorkloadError(f"{where}: more than {MAX_REQUESTS} requests")
    if len(requests) < 2:
        raise WorkloadError(f"{where}: needs at least 2 requests (one per line)")
    requests.sort(key=lambda r: r.arrival_s)
    span = requests[-1].arrival_s - requests[0].arrival_s
    if span <= 0:
        raise WorkloadError(f"{where}: every request arrives at the same time; field 'arrival_s' must vary")
    rate = (len(requests) - 1) / span
    return Workload(tuple(requests), rate, f"trace {path.name} ({len(requests)} requests, {rate:.3g} req/s)")
