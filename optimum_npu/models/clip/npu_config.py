"""CLIP's compile knobs: one encoder bucket grid per tower, the dtype and target shared."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from optimum_npu.models.decoder.npu_config import NPUConfigError
from optimum_npu.models.decoder.stored_config import short_repr
from optimum_npu.models.knobs import coerce_knobs
from optimum_npu.models.encoder.npu_config import NPUEncoderConfig

#: Runtime options: chosen at load time, not stored as compile knobs.
RUNTIME_OPTIONS = ("device", "profile")
#: The knobs a tower's dict may hold (the rest is shared by both towers and given at the top level).
TOWER_KNOBS = {"text": ("seq_lens", "batch_sizes"), "vision": ("image_sizes", "batch_sizes")}
#: The top-level knobs besides the towers.
SHARED_KNOBS = ("dtype", "npu", "tensor_parallel_size")


@dataclass(frozen=True)
class NPUCLIPConfig:
    """Compile configuration of a CLIP model: its text and vision towers as two encoder grids.

    Args:
        text: the text tower's buckets, ``{"seq_lens": [...], "batch_sizes": [...]}`` (defaults as for an encoder:
            sequence lengths capped at the position limit, 77 for CLIP).
        vision: the vision tower's buckets, ``{"image_sizes": [...], "batch_sizes": [...]}`` (default: the model's
            image size).
        dtype: compute and weight dtype of both towers.
        npu: target device spec (preset or JSON file).
        tensor_parallel_size: 1 (each tower runs on one device).
        device: runtime option: the simulated device both towers run on.
        profile: runtime option: record every op (``model.npu_profile``).
    """

    text: dict = field(default_factory=dict)
    vision: dict = field(default_factory=dict)
    dtype: str = "float32"
    npu: str = "atom"
    tensor_parallel_size: int = 1
    device: int = field(default=0, metadata={"runtime": True})
    profile: bool = field(default=False, metadata={"runtime": True})

    def __post_init__(self):
        for tower, allowed in TOWER_KNOBS.items():
            knobs = getattr(self, tower)
            if isinstance(knobs, NPUEncoderConfig):
                knobs = {k: v for k, v in knobs.to_dict().items() if k in allowed and v is not None}
            if not isinstance(knobs, dict) or set(knobs) - set(allowed):
                raise NPUConfigError(f"npu_config {tower}={short_repr(knobs)} is invalid: give a dict of "
                                     f"{list(allowed)} (dtype, npu and the runtime options go at the top level)")
            object.__setattr__(self, tower, {k: list(v) if isinstance(v, tuple) else v for k, v in knobs.items()})
        if isinstance(self.npu, os.PathLike):
            object.__setattr__(self, "npu", os.fspath(self.npu))
        self.tower("text"), self.tower("vision")   # each tower's knobs checked now, with the encoder's messages

    def tower(self, name: str) -> NPUEncoderConfig:
        """The encoder config of the ``text`` or ``vision`` tower (unresolved)."""
        return NPUEncoderConfig(**getattr(self, name), dtype=self.dtype, npu=self.npu,
                                tensor_parallel_size=self.tensor_parallel_size, device=self.device,
                                profile=self.profile)

    @classmethod
    def coerce(cls, value: Any) -> "NPUCLIPConfig":
        """An ``NPUCLIPConfig`` from itself, a dict of its fields or None (defaults)."""
        return coerce_knobs(cls, value, "CLIP", "{'text': {'seq_lens': [16, 77]}, 'vision': {'image_sizes': [224]}}",
                            " (bucket knobs go in 'text' / 'vision')")

    def to_dict(self) -> dict[str, Any]:
        """The compile knobs (runtime options left out), JSON-ready."""
        return {"text": dict(self.text), "vision": dict(self.vision),
                **{name: getattr(self, name) for name in SHARED_KNOBS}}

    def runtime(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in RUNTIME_OPTIONS}

    @classmethod
    def from_towers(cls, text: NPUEncoderConfig, vision: NPUEncoderConfig) -> "NPUCLIPConfig":
        """The config whose towers are these resolved encoder configs."""
        return cls(text=text, vision=vision, dtype=text.dtype, npu=text.npu,
                   tensor_parallel_size=text.tensor_parallel_size, device=text.device, profile=text.profile)
