"""Compile knobs of a vision-language model: one nested object, a config per submodule.

``npu_config={"visual": {"max_seq_len": [1024, 3136, 16384], "device": [0]},
"language_model": {"max_seq_len": 8192, "batch_size": 2, "tensor_parallel_size": 2, "device": [2, 3]}}``.
``device`` inside a submodule is its placement (a runtime option); ``device_map`` is the same
placement given in one place: ``{"visual": [0], "language_model": [2, 3]}``. Both submodules
target one NPU spec, ``npu``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from optimum_npu.models.decoder.npu_config import NPUConfigError, NPUDecoderConfig
from optimum_npu.models.vlm.visual_config import NPUVisualConfig

SUBMODULES = ("visual", "language_model")


@dataclass(frozen=True)
class NPUVLMConfig:
    """Compile configuration of a vision-language model.

    Args:
        visual: the visual encoder's buckets and dtype (``NPUVisualConfig``).
        language_model: the decoder's knobs (``NPUDecoderConfig``; its ``device`` places it).
        npu: the target NPU spec of both submodules.
        visual_device: runtime option: the device(s) the visual encoder runs on.
    """

    visual: NPUVisualConfig = field(default_factory=NPUVisualConfig)
    language_model: NPUDecoderConfig = field(default_factory=NPUDecoderConfig)
    npu: str = "atom"
    visual_device: tuple[int, ...] = field(default=(0,), metadata={"runtime": True})

    @classmethod
    def coerce(cls, value: "NPUVLMConfig | dict | None") -> "NPUVLMConfig":
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise NPUConfigError(f"npu_config must be an NPUVLMConfig or a dict, got {type(value).__name__}")
        data = dict(value)
        unknown = sorted(set(data) - {"visual", "language_model", "npu", "device_map"})
        if unknown:
            raise NPUConfigError(f"unknown npu_config keys {unknown} for a vision-language model; use 'visual', "
                                 "'language_model', 'npu' and 'device_map'")
        visual = dict(data.get("visual") or {}) if not isinstance(data.get("visual"), NPUVisualConfig) \
            else dataclasses.asdict(data["visual"])
        language = data.get("language_model") or {}
        language = dict(language) if isinstance(language, dict) else language.to_dict()
        device_map = data.get("device_map") or {}
        unknown = sorted(set(device_map) - set(SUBMODULES))
        if unknown:
            raise NPUConfigError(f"device_map has unknown submodules {unknown}; use {list(SUBMODULES)}")
        visual_device = device_map.get("visual", visual.pop("device", 0))
        if "language_model" in device_map:
            language["device"] = device_map["language_model"]
        npu = data.get("npu", language.get("npu", "atom"))
        if language.get("npu", npu) != npu:
            raise NPUConfigError(f"language_model.npu={language['npu']!r} differs from npu={npu!r}; both "
                                 "submodules run on one node: set the target once, as npu")
        language["npu"] = npu
        ids = tuple(visual_device) if isinstance(visual_device, (list, tuple)) else (visual_device,)
        return cls(NPUVisualConfig.coerce(visual), NPUDecoderConfig.from_dict(language), npu, ids)

    def __post_init__(self):
        if not self.visual_device or any(not isinstance(i, int) or i < 0 for i in self.visual_device):
            raise NPUConfigError(f"visual device={list(self.visual_device)} is invalid: give device ids >= 0")
        if self.language_model.enable_prefix_caching:
            raise NPUConfigError("language_model.enable_prefix_caching=True is not supported for vision-language "
                                 "models (image tokens share one id, so a prefix hash cannot tell images apart); "
                                 "leave it False")

    def to_dict(self) -> dict[str, Any]:
        return {"visual": self.visual.to_dict() | {"device": list(self.visual_device)},
                "language_model": self.language_model.to_dict(), "npu": self.npu}
