"""Simulated NPU devices and the registries that own them.

A ``DeviceRegistry`` is one simulated node: ``npu:0 .. npu:N-1`` of a spec, each with its
own memory and clock. Models loaded through the same registry onto the same device id share
that device's DRAM. Nothing is global by accident: ``DEFAULT_REGISTRY`` is the one shared
node that models use when none is given (``registry=None``), named here so that tests and
applications can inspect it, and ``reset()`` can drop its devices once nothing is reserved.
"""

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
        """Moves the device clock forward by ``seconds`` of simulated time."""
        self.clock_s += seconds


class DeviceRegistry:
    """The devices of one simulated node, created on first use, one per (spec name, index).

    Args:
        name: a label for reports (``default`` for ``DEFAULT_REGISTRY``).
    """

    def __init__(self, name: str = "node"):
        self.name = name
        self._devices: dict[tuple[str, int], NPUDevice] = {}
        self._lock = threading.Lock()

    def get(self, spec: NPUSpec, index: int) -> NPUDevice:
        """Device ``index`` of ``spec`` in this registry: every model that asks for it shares its memory.

        Raises:
            ValueError: ``index`` is not a device of the spec's node.
        """
        if index >= spec.devices_per_node:
            raise ValueError(f"device={index} does not exist: the {spec.name!r} node has devices "
                             f"0..{spec.devices_per_node - 1}; choose a device id in that range")
        with self._lock:
            key = (spec.name, index)
            if key not in self._devices or self._devices[key].spec != spec:
                self._devices[key] = NPUDevice(index, spec)
            return self._devices[key]

    @property
    def devices(self) -> list[NPUDevice]:
        """The devices created so far."""
        with self._lock:
            return list(self._devices.values())

    def reserved_bytes(self) -> int:
        """Bytes reserved on every device of this registry (0 when every model was released)."""
        return sum(device.memory.used for device in self.devices)

    def reset(self, force: bool = False) -> None:
        """Forgets every device (memory and clocks start afresh on next use).

        Raises:
            RuntimeError: memory is still reserved (a model was not released) and ``force`` is False.
        """
        used = {d.name: d.memory.used for d in self.devices if d.memory.used}
        if used and not force:
            raise RuntimeError(f"device registry {self.name!r} still holds reservations {used}; release the models "
                               "(model.release()) before reset(), or pass force=True")
        with self._lock:
            self._devices.clear()


#: The shared node models use when no registry is given.
DEFAULT_REGISTRY = DeviceRegistry("default")


def get_device(spec: NPUSpec, index: int, registry: DeviceRegistry | None = None) -> NPUDevice:
    """Device ``index`` of a spec in ``registry`` (``DEFAULT_REGISTRY`` when None)."""
    return (registry or DEFAULT_REGISTRY).get(spec, index)
