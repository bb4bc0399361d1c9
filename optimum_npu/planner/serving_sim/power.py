"""Rated board power (TDP) of the preset devices, for tokens/s per watt. TDP is the datasheet's maximum
board power, not a measured wall power; a serving node also draws host, fan and network power."""

from __future__ import annotations

#: preset name -> (watts, source). Where a range is published the top of the range is used.
TDP_WATTS: dict[str, tuple[float, str]] = {
    "atom": (130.0, "Rebellions ATOM (RBLN-CA12) product brief: 60-130 W"),
    "rebel-quad": (600.0, "Rebellions REBEL-Quad announcement: 600 W"),
    "rngd": (180.0, "FuriosaAI RNGD product page: 150-180 W TDP"),
    "a100-40gb": (400.0, "NVIDIA A100 datasheet: SXM4 max TDP 400 W"),
    "a100-80gb": (400.0, "NVIDIA A100 datasheet: SXM4 max TDP 400 W"),
    "h100-sxm": (700.0, "NVIDIA H100 datasheet: SXM5 max TDP up to 700 W"),
}


def tdp_watts(npu: str) -> float | None:
    """The rated power of one device of preset ``npu`` (None when no public figure is recorded)."""
    entry = TDP_WATTS.get(npu)
    return entry[0] if entry else None
