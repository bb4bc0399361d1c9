"""The encoder family's compile knobs: a grid of (batch size x input length) buckets.

The length axis is the modality's: ``seq_lens`` (tokens) for text encoders, ``image_sizes`` (pixels per
side of a square image) for vision encoders, ``max_samples`` (audio samples) for speech models; exactly one
of them is set once resolved against the model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from optimum_npu.device.buckets import Bucket
from optimum_npu.device.spec import PRESETS
from optimum_npu.models.decoder.npu_config import SUPPORTED_DTYPES, NPUConfigError
from optimum_npu.models.decoder.stored_config import short_repr
from optimum_npu.models.knobs import check_device_and_profile, coerce_knobs

#: Bucket kind of every text encoder graph (``Graph.attributes["kind"]``).
ENCODER_KIND = "encoder"
#: The length axis of each modality: knob -> (bucket kind, graph name pattern, example value). A bucket's
#: ``tokens`` is its length: tokens per row (text), pixels per image side (image).
AXES = {"seq_lens": (ENCODER_KIND, "encoder_b{batch}_s{length}", "[64, 128, 512]"),
        "image_sizes": ("image", "image_b{batch}_px{length}", "[224, 384]"),
        "max_samples": ("audio", "audio_b{batch}_n{length}", "[16000, 80000, 160000]")}
#: What each axis is for (errors name it).
AXIS_MODELS = {"seq_lens": "text encoders", "image_sizes": "vision encoders", "max_samples": "speech models"}
#: Most entries of ``seq_lens`` or ``batch_sizes`` (each pair is one compiled graph).
MAX_GRID_SIDE = 16
#: Most devices one text encoder is split across (``tensor_parallel_size``; BERT-family only, ``tp_plan.py``).
MAX_TENSOR_PARALLEL = 8
#: Runtime options: chosen at load time, not stored as compile knobs.
RUNTIME_OPTIONS = ("device", "profile")


def _sizes(name: str, value: Any, example: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or len(value) > MAX_GRID_SIDE or any(
            not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in value):
        raise NPUConfigError(f"{name}={short_repr(value)} is invalid: it must be a list of 1 to {MAX_GRID_SIDE} "
                             f"integers >= 1, e.g. {name}={example}")
    if len(set(value)) != len(value):
        raise NPUConfigError(f"{name}={list(value)} lists a size twice; list each bucket once")
    return tuple(sorted(value))


@dataclass(frozen=True)
class NPUEncoderConfig:
    """Compile configuration of an encoder (BERT, RoBERTa, XLM-R, DistilBERT; ViT, ResNet).

    Args:
        seq_lens: text encoders: the sequence-length buckets; a call runs on the smallest one >= its token
            width. Default: [64, 128, 512] capped at the model's position limit.
        image_sizes: vision encoders: the image sizes compiled (pixels per side of a square image, as the
            image processor resizes them); an image runs on the bucket of its size. Default: the model's
            ``image_size`` (224 when its config has none).
        max_samples: speech models: the audio length buckets in samples; a call runs on the smallest one >= its
            samples, zero-padded and masked. Default: [16000, 80000, 160000] (1, 5, 10 s at 16 kHz).
        batch_sizes: the batch buckets; a batch runs on the smallest >= its rows, a larger batch is
            split into calls of the largest. One graph is compiled per (batch size, sequence length).
        dtype: compute and weight dtype (float32, float16, bfloat16).
        npu: target device spec, a preset name or a JSON spec file path.
        tensor_parallel_size: devices a text encoder (BERT, RoBERTa, XLM-R, DistilBERT) is split across (heads
            and feed-forward columns, ``tp_plan.py``); vision and speech encoders run on one device (1).
        device: runtime option: the simulated device id the model runs on (rank r on ``device + r``).
        profile: runtime option: record every op on the device's track (``model.npu_profile``).
    """

    seq_lens: tuple[int, ...] | None = None
    image_sizes: tuple[int, ...] | None = None
    max_samples: tuple[int, ...] | None = None
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    dtype: str = "float32"
    npu: str = "atom"
    tensor_parallel_size: int = 1
    device: int = field(default=0, metadata={"runtime": True})
    profile: bool = field(default=False, metadata={"runtime": True})

    def __post_init__(self):
        for axis, (_, _, example) in AXES.items():
            if getattr(self, axis) is not None:
                object.__setattr__(self, axis, _sizes(axis, getattr(self, axis), example))
        given = [axis for axis in AXES if getattr(self, axis) is not None]
        if len(given) > 1:
            raise NPUConfigError(f"{' and '.join(f'{a}={list(getattr(self, a))}' for a in given)} are all set: "
                                 f"{', '.join(f'{a} is for {AXIS_MODELS[a]}' for a in given)}; give the one of your "
                                 "model")
        object.__setattr__(self, "batch_sizes", _sizes("batch_sizes", self.batch_sizes, "[1, 8, 32]"))
        if isinstance(self.npu, os.PathLike):
            object.__setattr__(self, "npu", os.fspath(self.npu))
        if not isinstance(self.npu, str):
            raise NPUConfigError(f"npu={short_repr(self.npu)} is invalid: give a preset name {sorted(PRESETS)} or "
                                 "the path of a JSON spec file")
        if self.dtype not in SUPPORTED_DTYPES:
            raise NPUConfigError(f"dtype={short_repr(self.dtype)} is invalid: use one of {list(SUPPORTED_DTYPES)}")
        if not isinstance(self.tensor_parallel_size, int) or isinstance(self.tensor_parallel_size, bool) \
                or not 1 <= self.tensor_parallel_size <= MAX_TENSOR_PARALLEL:
            raise NPUConfigError(f"tensor_parallel_size={short_repr(self.tensor_parallel_size)} is invalid: give the "
                                 f"devices one text encoder is split across, 1 to {MAX_TENSOR_PARALLEL}")
        check_device_and_profile(self.device, self.profile)

    @classmethod
    def coerce(cls, value: Any) -> "NPUEncoderConfig":
        """An ``NPUEncoderConfig`` from itself, a dict of its fields or None (defaults)."""
        return coerce_knobs(cls, value, "encoder", "{'seq_lens': [64, 128, 512], 'batch_sizes': [1, 8, 32]}")

    @property
    def axis(self) -> str | None:
        """The length knob that is set (``seq_lens`` or ``image_sizes``), None before ``resolve``."""
        return next((axis for axis in AXES if getattr(self, axis) is not None), None)

    @property
    def device_ids(self) -> list[int]:
        """The simulated device of each tensor-parallel rank."""
        return [self.device + rank for rank in range(self.tensor_parallel_size)]

    def single_device(self, what: str) -> None:
        """Refuses ``tensor_parallel_size > 1`` for a model that is not split (``what`` names it)."""
        if self.tensor_parallel_size != 1:
            raise NPUConfigError(f"tensor_parallel_size={self.tensor_parallel_size}: {what} run on one device (their "
                                 "weights fit one; run more replicas on other devices with device=<id>); use "
                                 "tensor_parallel_size=1")

    def resolve_axis(self, axis: str, defaults: tuple[int, ...], minimum: int = 1) -> "NPUEncoderConfig":
        """Fills the default of the model's length ``axis``; refuses another axis and a length below ``minimum``."""
        other = next((a for a in AXES if a != axis and getattr(self, a) is not None), None)
        if other is not None:
            raise NPUConfigError(f"{other}={list(getattr(self, other))} applies to {AXIS_MODELS[other]}; this model "
                                 f"is one of the {AXIS_MODELS[axis]}: give {axis} (e.g. {axis}={list(defaults)})")
        lengths = getattr(self, axis) or defaults
        if min(lengths) < minimum:
            raise NPUConfigError(f"{axis}={list(lengths)} holds {min(lengths)}, below the {minimum} the model needs "
                                 f"for one output; use {axis} >= {minimum}")
        return NPUEncoderConfig(**{**self.to_dict(), **self.runtime(), axis: tuple(lengths)})

    def resolve(self, max_positions: int | None) -> "NPUEncoderConfig":
        """Fills the default ``seq_lens`` and checks every bucket against the model's position limit."""
        self.resolve_axis("seq_lens", (64, 128, 512))   # refuses the other axes
        limit = max_positions or 512
        seq_lens = self.seq_lens or tuple(sorted({min(s, limit) for s in (64, 128, 512)}))
        too_long = [s for s in seq_lens if s > limit]
        if too_long:
            raise NPUConfigError(f"seq_lens={list(seq_lens)} holds {too_long}, longer than the model's "
                                 f"{limit} positions (max_position_embeddings); use sequence lengths <= {limit}")
        return NPUEncoderConfig(**{**self.to_dict(), **self.runtime(), "seq_lens": seq_lens})

    def buckets(self) -> list[Bucket]:
        """One bucket per (batch size, length), named ``encoder_b<batch>_s<tokens>`` (text),
        ``image_b<batch>_px<size>`` (images) or ``audio_b<batch>_n<samples>`` (audio)."""
        axis = self.axis
        if axis is None:
            raise NPUConfigError("seq_lens / image_sizes / max_samples are not resolved against the model yet "
                                 "(NPUEncoderConfig.resolve)")
        kind, pattern, _ = AXES[axis]
        return [Bucket(pattern.format(batch=b, length=s), kind, b, s) for b in self.batch_sizes
                for s in getattr(self, axis)]

    def graph_names(self) -> list[str]:
        return [bucket.name for bucket in self.buckets()]

    def to_dict(self) -> dict[str, Any]:
        """The compile knobs (runtime options left out), JSON-ready."""
        others = {a: list(getattr(self, a)) for a in ("image_sizes", "max_samples") if getattr(self, a)}
        return {"seq_lens": list(self.seq_lens) if self.seq_lens else None, **others,   # text artifacts: unchanged
                "batch_sizes": list(self.batch_sizes), "dtype": self.dtype, "npu": self.npu,
                "tensor_parallel_size": self.tensor_parallel_size}

    def runtime(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in RUNTIME_OPTIONS}
