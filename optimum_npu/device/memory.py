"""Device memory: named allocations against an enforced capacity."""

from __future__ import annotations

import os
from dataclasses import dataclass

CATEGORIES = ("weights", "kv_cache", "workspace", "collective_buffers")


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


class DeviceOutOfMemoryError(MemoryError):
    """An allocation does not fit in a device's DRAM; the message has a per-category breakdown."""


def host_memory_bytes() -> int | None:
    """Physical memory of this machine (None where the platform does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def host_available_bytes() -> int | None:
    """Memory this machine can still hand out (``MemAvailable``, else the free pages; None where unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def check_host_allocation(nbytes: int, what: str) -> None:
    """The simulated device's tensors live in host memory: refuses ``nbytes`` larger than this machine's RAM
    before anything is allocated (an artifact may carry a spec with any DRAM size)."""
    host = host_memory_bytes()
    if host is not None and nbytes > host:
        raise DeviceOutOfMemoryError(f"{what} needs {format_bytes(nbytes)} of host memory (the simulated device "
                                     f"keeps it there) but this machine has {format_bytes(host)}; reduce "
                                     "kvcache_num_blocks, max_seq_len or batch_size")


@dataclass(frozen=True)
class Allocation:
    owner: str
    category: str
    nbytes: int


class DeviceMemory:
    """DRAM of one simulated device. Several models may allocate; their bytes add up."""

    def __init__(self, device_name: str, capacity: int):
        self.device_name = device_name
        self.capacity = capacity
        self._allocations: dict[int, Allocation] = {}
        self._next_handle = 0

    @property
    def used(self) -> int:
        return sum(a.nbytes for a in self._allocations.values())

    def by_category(self, owner: str | None = None) -> dict[str, int]:
        totals = dict.fromkeys(CATEGORIES, 0)
        for alloc in self._allocations.values():
            if owner is None or alloc.owner == owner:
                totals[alloc.category] = totals.get(alloc.category, 0) + alloc.nbytes
        return totals

    def reserve(self, owner: str, request: dict[str, int]) -> list[int]:
        """Allocates every category of ``request`` at once, or raises and allocates nothing."""
        unknown = set(request) - set(CATEGORIES)
        if unknown:
            raise ValueError(f"unknown memory categories {sorted(unknown)}; use {CATEGORIES}")
        needed = sum(request.values())
        if self.used + needed > self.capacity:
            raise DeviceOutOfMemoryError(self._oom_message(owner, request))
        handles = []
        for category, nbytes in request.items():
            self._allocations[self._next_handle] = Allocation(owner, category, int(nbytes))
            handles.append(self._next_handle)
            self._next_handle += 1
        return handles

    def held(self, handles: list[int]) -> dict[str, int]:
        """The bytes per category that the reservations ``handles`` (one ``reserve`` call) still hold."""
        totals: dict[str, int] = {}
        for handle in handles:
            alloc = self._allocations.get(handle)
            if alloc is not None:
                totals[alloc.category] = totals.get(alloc.category, 0) + alloc.nbytes
        return totals

    def release(self, handles: list[int]) -> None:
        for handle in handles:
            self._allocations.pop(handle, None)

    def _oom_message(self, owner: str, request: dict[str, int]) -> str:
        lines = [f"{owner} does not fit on {self.device_name}: it needs {format_bytes(sum(request.values()))} "
                 f"but {format_bytes(self.capacity - self.used)} of {format_bytes(self.capacity)} is free."]
        lines += [f"  {category:<10} {format_bytes(nbytes):>12}" for category, nbytes in request.items()]
        if self.used:
            lines.append(f"  already in use by other models: {format_bytes(self.used)}")
        lines.append("Reduce max_seq_len or batch_size (KV cache), use a smaller dtype (weights), "
                     "or target an NPU spec with more memory.")
        return "\n".join(lines)
