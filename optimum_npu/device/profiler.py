"""Profiler of the simulated NPU: every op / fused group of every graph call on its device's track.

The runtime feeds it one call at a time (device name, the device clock at the start of the
call, the cost model's timeline of the call). It keeps absolute events per device, sums
them per category, and exports a Chrome-trace / Perfetto JSON file (open it in
https://ui.perfetto.dev): one process per device (``npu:N``), one thread per category lane,
plus a lane with the graph calls.
"""

from __future__ import annotations

import json
import re
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from optimum_npu.device.timeline import CATEGORIES, TimelineEvent

#: Lane (Chrome-trace thread id) of each category; lane 0 shows the graph calls.
LANES = {category: i + 1 for i, category in enumerate(CATEGORIES)}
GRAPH_LANE = "Graph calls"


@dataclass(frozen=True)
class ProfiledEvent:
    """An event at an absolute device time (seconds since the device was created)."""

    device: str
    name: str
    category: str
    start_s: float
    duration_s: float
    args: dict = field(default_factory=dict, compare=False)


class Profiler:
    """Per-device record of what every graph call spent; see ``summary()`` and ``to_chrome_trace()``."""

    def __init__(self):
        self.events: list[ProfiledEvent] = []
        self.calls: list[ProfiledEvent] = []

    def clear(self) -> None:
        """Forgets every recorded call."""
        self.events.clear()
        self.calls.clear()

    def record(self, device: str, start_s: float, events: list[TimelineEvent], graph: str = "",
               phase: str = "") -> None:
        """Records one graph call on ``device`` that started at device time ``start_s``.

        Args:
            device: the device name (``npu:0 (atom)``); its ``npu:N`` prefix names the track.
            start_s: the device clock when the call started, seconds.
            events: the call's timeline (offsets from its start), e.g. ``GraphCostModel.timeline``.
            graph / phase: shown on the graph-call lane (``decoder_batch_4`` / ``decode``).
        """
        for event in events:
            if event.category not in LANES:
                raise ValueError(f"unknown profiler category {event.category!r}; use one of {CATEGORIES}")
            self.events.append(ProfiledEvent(device, event.name, event.category, start_s + event.start_s,
                                             event.duration_s, dict(event.args)))
        duration = max((e.end_s for e in events), default=0.0)
        self.calls.append(ProfiledEvent(device, graph or "graph", GRAPH_LANE, start_s, duration,
                                        {"phase": phase, "ops": len(events)}))

    def record_call(self, devices, graph: str, phase: str, events: list[TimelineEvent]) -> None:
        """Records the same call on every device of a group, each from its own clock (``device.clock_s``)."""
        for device in devices:
            self.record(device.name, device.clock_s, events, graph, phase)

    def add(self, device: str, category: str, name: str, start_s: float, duration_s: float, **args) -> None:
        """Records one event at an absolute time (e.g. a runtime waiting for its peers: Device Sync)."""
        if category not in LANES:
            raise ValueError(f"unknown profiler category {category!r}; use one of {CATEGORIES}")
        self.events.append(ProfiledEvent(device, name, category, start_s, duration_s, args))

    # ---- aggregates ---------------------------------------------------------------------------
    @property
    def devices(self) -> list[str]:
        return sorted({e.device for e in self.events + self.calls}, key=_device_index)

    def totals(self, device: str | None = None) -> dict[str, float]:
        """Seconds per category (every category present, 0 when unused), for one device or all."""
        totals = dict.fromkeys(CATEGORIES, 0.0)
        for event in self.events:
            if device is None or event.device == device:
                totals[event.category] += event.duration_s
        return totals

    def device_seconds(self, device: str) -> float:
        """Total simulated seconds recorded on a device's track."""
        return sum(self.totals(device).values())

    def top_ops(self, device: str, count: int = 8) -> list[tuple[str, int, float]]:
        """The ops / fused groups that took the most time on a device: (name, calls, seconds)."""
        seconds: dict[str, float] = defaultdict(float)
        calls: dict[str, int] = defaultdict(int)
        for event in self.events:
            if event.device == device:
                seconds[event.name] += event.duration_s
                calls[event.name] += 1
        ranked = sorted(seconds, key=seconds.get, reverse=True)[:count]
        return [(name, calls[name], seconds[name]) for name in ranked]

    def summary(self) -> str:
        """A text table per device: time and share per category, and the most expensive ops."""
        if not self.events:
            return "NPU profile: nothing recorded (load with npu_config={'profile': True} and run the model)"
        lines = []
        for device in self.devices:
            totals = self.totals(device)
            total = sum(totals.values()) or 1.0
            phases = defaultdict(int)
            for call in self.calls:
                if call.device == device:
                    phases[call.args.get("phase") or "call"] += 1
            described = ", ".join(f"{n} {phase}" for phase, n in sorted(phases.items()))
            lines += [f"NPU profile of {device}: {sum(phases.values())} graph calls ({described})",
                      f"  {'category':<16} {'time (ms)':>12} {'share':>8}"]
            lines += [f"  {cat:<16} {sec * 1e3:12.4f} {100 * sec / total:7.1f}%" for cat, sec in totals.items()]
            lines.append(f"  {'total':<16} {total * 1e3:12.4f} {100.0:7.1f}%")
            lines.append("  most expensive ops / fused groups:")
            lines += [f"    {name:<40} x{n:<6} {sec * 1e3:10.4f} ms {100 * sec / total:6.1f}%"
                      for name, n, sec in self.top_ops(device)]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    # ---- export -------------------------------------------------------------------------------
    def to_chrome_trace(self) -> dict:
        """The Chrome-trace JSON object (``traceEvents``, times in µs) that ui.perfetto.dev opens."""
        trace = []
        for device in self.devices:
            pid = _device_index(device)
            trace.append(_meta("process_name", pid, 0, name=device))
            trace.append(_meta("process_sort_index", pid, 0, sort_index=pid))
            for lane, tid in [(GRAPH_LANE, 0), *LANES.items()]:
                trace.append(_meta("thread_name", pid, tid, name=lane))
                trace.append(_meta("thread_sort_index", pid, tid, sort_index=tid))
        for event in sorted(self.calls + self.events, key=lambda e: (e.device, e.start_s)):
            trace.append({"name": event.name, "cat": event.category, "ph": "X", "ts": event.start_s * 1e6,
                          "dur": event.duration_s * 1e6, "pid": _device_index(event.device),
                          "tid": LANES.get(event.category, 0), "args": event.args})
        return {"traceEvents": trace, "displayTimeUnit": "ns",
                "metadata": {"producer": "optimum-npu simulated NPU profiler"}}

    def save(self, path: str | Path) -> Path:
        """Writes the Chrome-trace JSON to ``path`` (open it in https://ui.perfetto.dev); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_chrome_trace()))
        return path


def _device_index(device: str) -> int:
    match = re.match(r"npu:(\d+)", device)
    return int(match.group(1)) if match else 10_000 + zlib.crc32(device.encode()) % 10_000


def _meta(kind: str, pid: int, tid: int, **args) -> dict:
    return {"name": kind, "ph": "M", "pid": pid, "tid": tid, "ts": 0, "args": args}
