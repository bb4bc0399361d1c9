"""Simulated figures of a compiled pipeline: time per component and per denoising step, memory per device."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ComponentCall:
    """One graph call of one component: the bucket graph, the real rows it carried, its simulated seconds."""

    component: str
    graph: str
    rows: int
    bucket_rows: int
    device: int
    seconds: float


@dataclass
class DiffusionStats:
    """Every component call since the pipeline was loaded (or ``reset()``), and what each device holds.

    Attributes:
        calls: the calls in order.
        images: images generated.
        memory: bytes reserved per device, per component and category (``{0: {"unet": {"weights": ...}}}``).
    """

    calls: list[ComponentCall] = field(default_factory=list)
    images: int = 0
    memory: dict[int, dict[str, dict[str, int]]] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        """Simulated seconds of every call (components run one after another)."""
        return sum(call.seconds for call in self.calls)

    @property
    def seconds_by_component(self) -> dict[str, float]:
        totals: dict[str, float] = defaultdict(float)
        for call in self.calls:
            totals[call.component] += call.seconds
        return dict(totals)

    @property
    def denoising_steps(self) -> list[float]:
        """Simulated seconds of each denoiser call (one per denoising step)."""
        return [call.seconds for call in self.calls if call.component in ("unet", "transformer")]

    @property
    def seconds_per_image(self) -> float:
        return self.seconds / self.images if self.images else 0.0

    @property
    def memory_per_device(self) -> dict[int, int]:
        """Total bytes reserved on each device (every component placed there)."""
        return {device: sum(sum(parts.values()) for parts in owners.values()) for device, owners in self.memory.items()}

    def reset(self) -> None:
        self.calls.clear()
        self.images = 0

    def __str__(self) -> str:
        parts = ", ".join(f"{name} {seconds * 1e3:.3f} ms" for name, seconds in self.seconds_by_component.items())
        steps = self.denoising_steps
        step = f"{steps[0] * 1e3:.3f} ms per denoising step, " if steps else ""
        memory = ", ".join(f"npu:{d} {b / 2**20:.1f} MiB" for d, b in sorted(self.memory_per_device.items()))
        return (f"{self.images} images in {self.seconds * 1e3:.3f} ms simulated ({self.seconds_per_image * 1e3:.3f} ms "
                f"per image; {parts}); {step}memory {memory}")
