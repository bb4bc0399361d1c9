"""What one graph call spends, op by op: the events the cost model emits and the profiler records.

Categories follow the NPU profiler taxonomy. Each event is placed on the lane of the unit
that bounds it: an op (or fused group) whose roofline is set by compute goes on the
Neural Engine lane, one set by DRAM traffic on the Neural DMA lane, so the events of one
call tile its simulated time without overlapping.
"""

from __future__ import annotations

from dataclasses import dataclass, field

HOST = "Host"                      # host fallback ops run on the host CPU
NEURAL_ENGINE = "Neural Engine"    # compute-bound ops on the device's matrix/vector engines
NEURAL_DMA = "Neural DMA"          # DRAM <-> SRAM traffic (Task DMA): memory-bound ops
EXTERNAL_HDMA = "External HDMA"    # host <-> device copies over the host link (PCIe)
DEVICE_HDMA = "Device HDMA"        # device <-> device transfers of collectives
DEVICE_SYNC = "Device Sync"        # waiting at collectives (per-step link latency, peers)
DEQUANTIZE = "Dequantize"          # quantized weights converted on chip for an engine that lacks their format

#: Every category, in the order of the profiler's lanes.
CATEGORIES = (HOST, NEURAL_ENGINE, NEURAL_DMA, EXTERNAL_HDMA, DEVICE_HDMA, DEVICE_SYNC, DEQUANTIZE)


@dataclass(frozen=True)
class TimelineEvent:
    """One op, fused group or transfer of a graph call.

    Args:
        name: op short name (``linear``), fused group (``fused(linear+silu+mul)``) or transfer.
        category: one of ``CATEGORIES``.
        start_s: offset from the start of the call, seconds.
        duration_s: simulated seconds (>= 0).
        args: details shown by trace viewers (flops, bytes, graph node names...).
    """

    name: str
    category: str
    start_s: float
    duration_s: float
    args: dict = field(default_factory=dict, compare=False)

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s
