"""The visual encoder of a Qwen2-VL / Qwen2.5-VL / Qwen3-VL model: normalised model facts and compile knobs.

``VisualModelConfig.from_hf`` reads the HF vision config once; the rest of the code never
reads HF attribute names. ``NPUVisualConfig`` holds the compile knobs and checks them,
alone and against the model, before any compile work.

Unit of ``max_seq_len``: vision-transformer **patches**, i.e. rows of the processor's
``pixel_values`` (``grid_t * grid_h * grid_w`` per image), counted *before* the
``spatial_merge_size x spatial_merge_size`` merge. An image of 448x448 pixels with patch 14
is 32x32 = 1024 patches and becomes 256 tokens of the language model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from transformers import PretrainedConfig

from optimum_npu.device.buckets import Bucket
from optimum_npu.schema import bucket_graph_name  # noqa: F401  (re-exported: the visual family's graph names)

SUPPORTED_DTYPES = ("float32", "float16", "bfloat16")
#: HF vision ``model_type`` -> our encoder kind.
VISION_KINDS = {"qwen2_vl": "qwen2_vl", "qwen2_vl_vision": "qwen2_vl",
                "qwen2_5_vl": "qwen2_5_vl", "qwen2_5_vl_vision": "qwen2_5_vl",
                "qwen3_vl": "qwen3_vl", "qwen3_vl_vision": "qwen3_vl"}


class VisualConfigError(ValueError):
    """An invalid visual compile knob (the message names the knob, the value, the range and the fix)."""


@dataclass(frozen=True)
class VisualModelConfig:
    """What the compiler and the runtime need to know about a vision tower."""

    kind: str                               # "qwen2_vl", "qwen2_5_vl" or "qwen3_vl"
    depth: int
    embed_dim: int                          # width of the vision blocks
    num_heads: int
    out_hidden_size: int                    # width of the merged tokens (= the text model's hidden size)
    patch_size: int
    temporal_patch_size: int
    in_channels: int
    spatial_merge_size: int
    window_size: int = 0                    # pixels; Qwen2.5-VL only
    fullatt_block_indexes: tuple[int, ...] = ()
    num_position_embeddings: int = 0        # Qwen3-VL: learned square position grid, interpolated per image
    deepstack_visual_indexes: tuple[int, ...] = ()  # Qwen3-VL: blocks whose merged features feed the LM

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def merge_unit(self) -> int:
        """Patches merged into one language-model token (``spatial_merge_size ** 2``)."""
        return self.spatial_merge_size ** 2

    @property
    def patch_dim(self) -> int:
        """Width of one ``pixel_values`` row: channels x temporal patch x patch x patch."""
        return self.in_channels * self.temporal_patch_size * self.patch_size ** 2

    @property
    def pos_grid_side(self) -> int:
        """Side of the Qwen3-VL learned position grid (0: no learned position embedding)."""
        return int(self.num_position_embeddings ** 0.5)

    @property
    def window_merged(self) -> int:
        """Side of a Qwen2.5-VL attention window in merged tokens (0: no window attention)."""
        return self.window_size // self.spatial_merge_size // self.patch_size if self.window_size else 0

    def uses_window(self, block: int) -> bool:
        return self.kind == "qwen2_5_vl" and block not in self.fullatt_block_indexes

    @classmethod
    def from_hf(cls, config: PretrainedConfig) -> "VisualModelConfig":
        """From a VLM config (``Qwen2VLConfig``...) or its ``vision_config``."""
        vision = getattr(config, "vision_config", config)
        kind = VISION_KINDS.get(getattr(vision, "model_type", ""))
        if kind is None:
            raise VisualConfigError(f"vision model_type {getattr(vision, 'model_type', None)!r} is not supported; "
                                    f"supported: {sorted(set(VISION_KINDS))}")
        positions, deepstack = 0, ()
        if kind == "qwen2_vl":
            embed, out = vision.embed_dim, vision.hidden_size
            window, full = 0, ()
        elif kind == "qwen2_5_vl":
            embed, out = vision.hidden_size, vision.out_hidden_size
            window, full = vision.window_size, tuple(vision.fullatt_block_indexes)
        else:
            embed, out = vision.hidden_size, vision.out_hidden_size
            window, full = 0, ()
            positions, deepstack = vision.num_position_embeddings, tuple(vision.deepstack_visual_indexes)
        return cls(kind, vision.depth, embed, vision.num_heads, out, vision.patch_size, vision.temporal_patch_size,
                   vision.in_channels, vision.spatial_merge_size, window, full, positions, deepstack)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VisualModelConfig":
        """From ``dataclasses.asdict`` output read back from JSON (lists become tuples)."""
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in data.items()})


@dataclass(frozen=True)
class NPUVisualConfig:
    """Compile configuration of the visual encoder.

    Args:
        max_seq_len: the patch buckets, one graph each: an int or a sorted list of unique
            ints, in vision **patches** (rows of ``pixel_values``, before the 2x2 merge).
            Each must be a multiple of ``spatial_merge_size ** 2`` (4) so a padded bucket
            holds whole merge groups. Each image runs on the smallest bucket that holds it.
            Qwen2.5-VL windows add no constraint: windows and images are attention
            segments (a mask), not fixed-size tiles, so padding only needs whole merge groups.
        dtype: compute and weight dtype of the encoder (float32/float16/bfloat16).
        tensor_parallel_size: devices the encoder is split across; only 1 is supported
            (the encoder is small next to the language model: it runs on one device).
    """

    max_seq_len: tuple[int, ...] = (1024, 3136, 16384)
    dtype: str = "float32"
    tensor_parallel_size: int = 1

    def __post_init__(self):
        value = self.max_seq_len
        buckets = (value,) if isinstance(value, int) and not isinstance(value, bool) else value
        if not isinstance(buckets, (list, tuple)) or not buckets or not all(
                isinstance(b, int) and not isinstance(b, bool) for b in buckets):
            raise VisualConfigError(f"visual.max_seq_len={value!r} is invalid: it must be an integer or a non-empty "
                                    "list of integers (vision patches per bucket), e.g. [1024, 3136, 16384]")
        bad = [b for b in buckets if b < 1]
        if bad:
            raise VisualConfigError(f"visual.max_seq_len={list(buckets)} is invalid: {bad} must be >= 1 patch; "
                                    "use positive bucket sizes")
        if list(buckets) != sorted(set(buckets)):
            raise VisualConfigError(f"visual.max_seq_len={list(buckets)} is invalid: buckets must be sorted and "
                                    f"unique; use {sorted(set(buckets))}")
        if self.dtype not in SUPPORTED_DTYPES:
            raise VisualConfigError(f"visual.dtype={self.dtype!r} is invalid; choose one of {SUPPORTED_DTYPES}")
        if self.tensor_parallel_size != 1:
            raise VisualConfigError(f"visual.tensor_parallel_size={self.tensor_parallel_size!r} is not supported: "
                                    "the visual encoder runs on one device; use 1")
        object.__setattr__(self, "max_seq_len", tuple(buckets))

    def check_model(self, model: VisualModelConfig) -> "NPUVisualConfig":
        """Checks the buckets against the vision tower; returns ``self``."""
        unit = model.merge_unit
        bad = [b for b in self.max_seq_len if b % unit]
        if bad:
            fixed = sorted({-(-b // unit) * unit for b in self.max_seq_len})
            raise VisualConfigError(
                f"visual.max_seq_len={list(self.max_seq_len)} is invalid: {bad} are not multiples of "
                f"spatial_merge_size**2 = {unit} (each {unit} patches merge into one token); use {fixed}")
        return self

    @classmethod
    def coerce(cls, value: "NPUVisualConfig | dict | int | list | None") -> "NPUVisualConfig":
        """Accepts the config, a dict of its fields, a bucket list/int, or None (defaults)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            unknown = set(value) - {f.name for f in dataclasses.fields(cls)}
            if unknown:
                raise VisualConfigError(f"unknown visual option(s) {sorted(unknown)}; allowed: "
                                        f"{[f.name for f in dataclasses.fields(cls)]}")
            return cls(**value)
        return cls(max_seq_len=value)

    def to_dict(self) -> dict[str, Any]:
        return {"max_seq_len": list(self.max_seq_len), "dtype": self.dtype,
                "tensor_parallel_size": self.tensor_parallel_size}

    def graph_names(self) -> list[str]:
        return [bucket_graph_name(b) for b in self.max_seq_len]

    def bucket_for(self, patches: int) -> int | None:
        """The smallest bucket >= ``patches``, or None when none is large enough."""
        return next((b for b in self.max_seq_len if b >= patches), None)


def visual_bucket(patches: int) -> Bucket:
    """The bucket of the visual graph for ``patches`` patches (one image per call)."""
    return Bucket(bucket_graph_name(patches), "visual", 1, patches)
