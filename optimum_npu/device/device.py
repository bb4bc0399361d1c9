"""Simulated NPU devices: memory, a clock, and the programs loaded onto them."""

from __future__ import annotations

import threading

from optimum_npu.device.memory import DeviceMemory
from optimum_npu.device.spec import NPUSpec


class NPUDevice:
    """One simulated device ``npu:<index>``: enforced DRAM capacity and a simulated clock."""

    def __init__(self, index: int, spec: NPUSpec):
        self.index = index
        self.spec = spec
        self.memory = DeviceMemory(self.name, spec.dram_bytes)
        self.clock_s = 0.0

    @property
    def name(self) -> str:
        return f"npu:{self.index} ({self.spec.name})"

    def advance(self, seconds: float) -> None:
        self.clock_s += seconds


_DEVICES: dict[tuple[str, int], NPUDevice] = {}
_LOCK = threading.Lock()


def get_device(spec: NPUSpec, index: int) -> NPUDevice:
    """The process-wide device ``index`` of a spec: models loaded on it share its memory."""
    if index >= spec.devices_per_node:
        raise ValueError(f"device={index} does not exist: the {spec.name!r} node has devices "
                         f"0..{spec.devices_per_node - 1}; choose a device id in that range")
    with _LOCK:
        key = (spec.name, index)
        if key not in _DEVICES or _DEVICES[key].spec != spec:
            _DEVICES[key] = NPUDevice(index, spec)
        return _DEVICES[key]
