"""The ``quantization`` compile knob: which weights and caches are stored in low precision, and how.

``npu_config={"quantization": {"weights": "int8", "kv_cache": "fp8", "group_size": 128, "format": "rtn"}}``.
Checked on its own when built (``QuantizationConfig.coerce``), then against the model's linear layers
(``check_in_features``) and the target spec (``check_spec``) before anything is captured.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any, Mapping

#: Weight formats: symmetric round-to-nearest int8 / int4 per group of input features, fp8 e4m3 per output channel.
WEIGHT_FORMATS = ("int8", "int4", "fp8")
KV_CACHE_FORMATS = ("fp8",)
#: Ways of choosing the quantized values (round-to-nearest only: no calibration data is needed).
ALGORITHMS = ("rtn",)
#: The ``peak_flops`` key of a spec that has an engine for each format (an fp8 format needs one to exist).
ENGINE_OF = {"int8": "int8", "int4": "int4", "fp8": "float8"}
#: Weight formats stored in groups of ``group_size`` input features (fp8 has one scale per output channel).
GROUPED = ("int8", "int4")


class QuantizationConfigError(ValueError):
    """An invalid ``quantization`` knob (the message names the key, the value, what is allowed and the fix)."""


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _one_of(key: str, value: Any, allowed: tuple, none_ok: bool) -> None:
    if (value is None and none_ok) or (isinstance(value, str) and value in allowed):
        return
    choices = list(allowed) + ([None] if none_ok else [])
    hint = _did_you_mean(value, allowed) if isinstance(value, str) else ""
    raise QuantizationConfigError(f"quantization {key}={value!r} is not supported{hint}; choose one of {choices}")


@dataclass(frozen=True)
class QuantizationConfig:
    """How weights and the KV cache are quantized.

    Args:
        weights: ``int8`` / ``int4`` (symmetric, one scale per ``group_size`` input features; int4 packed two per
            byte) or ``fp8`` (float8 e4m3, one scale per output channel); None keeps the weights in ``dtype``.
            The logits projection (and an embedding table tied to it) is never quantized.
        kv_cache: ``fp8``: keys and values stored in float8 e4m3 with one scale per token and head; None keeps
            them in ``dtype``.
        group_size: input features sharing one scale (int8/int4); must divide the input features of every
            quantized layer (of each shard under tensor parallelism). Ignored by fp8 (per-channel scales).
        format: how quantized values are chosen: ``rtn`` (round to nearest, no calibration data).
    """

    weights: str | None = None
    kv_cache: str | None = None
    group_size: int = 128
    format: str = "rtn"

    def __post_init__(self):
        _one_of("weights", self.weights, WEIGHT_FORMATS, none_ok=True)
        _one_of("kv_cache", self.kv_cache, KV_CACHE_FORMATS, none_ok=True)
        _one_of("format", self.format, ALGORITHMS, none_ok=False)
        size = self.group_size
        if not isinstance(size, int) or isinstance(size, bool) or size < 1 or size % 2:
            raise QuantizationConfigError(f"quantization group_size={size!r} is invalid: it must be an even integer "
                                          ">= 2 (int4 packs two values per byte), e.g. 32, 64 or 128")
        if self.weights is None and self.kv_cache is None:
            raise QuantizationConfigError("quantization sets neither 'weights' nor 'kv_cache', so it quantizes "
                                          "nothing; give weights='int8'/'int4'/'fp8' and/or kv_cache='fp8', or drop "
                                          "the quantization knob")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "QuantizationConfig":
        """From a dict of keys; an unknown key is refused with the closest known one."""
        known = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in known:
                raise QuantizationConfigError(f"unknown quantization key {key!r}{_did_you_mean(key, known)}; "
                                              f"known keys: {known}")
        return cls(**data)

    @classmethod
    def coerce(cls, value: Any) -> "QuantizationConfig | None":
        """The object itself, a dict of keys, a weight format string (``"int8"``), or None (no quantization)."""
        if value is None or isinstance(value, cls):
            return value
        if isinstance(value, str):
            return cls(weights=value)
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        raise QuantizationConfigError(f"quantization must be a dict such as {{'weights': 'int8'}}, a "
                                      f"QuantizationConfig or None, got {type(value).__name__}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def grouped(self) -> bool:
        """Whether weight scales are per group of input features (int8/int4) rather than per channel."""
        return self.weights in GROUPED

    def label(self) -> str:
        """A short description, e.g. ``int4 weights (group 64), fp8 KV cache``."""
        parts = []
        if self.weights:
            parts.append(f"{self.weights} weights" + (f" (group {self.group_size})" if self.grouped else ""))
        if self.kv_cache:
            parts.append(f"{self.kv_cache} KV cache")
        return ", ".join(parts)

    def check_in_features(self, layers: Mapping[str, int], tensor_parallel_size: int = 1) -> None:
        """Refuses a group size that does not divide the input features of a layer (of each rank's shard).

        Args:
            layers: layer description -> its input features (per rank for row-parallel layers).
            tensor_parallel_size: named in the message when it is what makes a shard too small.
        """
        if not self.grouped:
            return
        for layer, features in layers.items():
            if features % self.group_size:
                divisors = [d for d in (256, 128, 64, 32, 16, 8, 4, 2) if features % d == 0 and d < self.group_size]
                shard = f" per device at tensor_parallel_size={tensor_parallel_size}" if tensor_parallel_size > 1 \
                    else ""
                raise QuantizationConfigError(
                    f"quantization group_size={self.group_size} does not divide the {features} input features{shard} "
                    f"of {layer}; each group of input features shares one scale, so choose a group_size that "
                    f"divides them, e.g. group_size={divisors[0] if divisors else 2}")

    def check_spec(self, spec_name: str, peak_flops: Mapping[str, float], presets: Mapping[str, Any]) -> None:
        """Refuses an fp8 format on a spec with no fp8 engine, naming the presets that have one.

        int8 and int4 weights run on any spec (a spec without an engine for them dequantises to its
        native type); float8 e4m3 values need the fp8 data path itself.
        """
        for key, fmt in (("weights", self.weights), ("kv_cache", self.kv_cache)):
            if fmt != "fp8" or ENGINE_OF[fmt] in peak_flops:
                continue
            with_fp8 = sorted(name for name, spec in presets.items() if ENGINE_OF[fmt] in spec.peak_flops)
            fallback = " or weights='int8'" if key == "weights" else " or kv_cache=None"
            raise QuantizationConfigError(
                f"quantization {key}='fp8' needs an NPU with an fp8 data path, and {spec_name!r} has none (its "
                f"peak_flops list {sorted(peak_flops)}); compile for a preset that has one ({', '.join(with_fp8)}), "
                f"add a 'float8' entry to a custom spec's peak_flops{fallback}")
