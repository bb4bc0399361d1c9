"""The Diffusers family's compile knobs: resolution x batch x guidance buckets, and a device per component.

One dict configures a whole pipeline, in the shape the peers use (a nested entry per component)::

    {"unet": {"resolutions": [[1024, 1024], [768, 1344]], "batch_size": 2, "guidance": [True], "device": [1, 2],
              "tensor_parallel_size": 2},
     "text_encoder": {"device": 0}, "vae": {"device": 3}, "dtype": "float32", "npu": "atom"}

``resolutions``, ``batch_size``, ``guidance`` and ``tensor_parallel_size`` belong to the denoiser (``unet`` or
``transformer``): the VAE is compiled at the same resolutions and batch, the text encoders at the same batch.
They may also be given at the top level. ``device`` (and ``profile``) are runtime options, chosen again at
load time; a split denoiser takes one device per rank.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from dataclasses import dataclass, field, replace
from typing import Any

from optimum_npu.device.spec import PRESETS
from optimum_npu.models.decoder.npu_config import SUPPORTED_DTYPES, NPUConfigError
from optimum_npu.models.decoder.stored_config import short_repr

#: Most resolutions (each one graph per guidance mode for the denoiser, one for each VAE part).
MAX_RESOLUTIONS = 16
#: Largest side in pixels a bucket may have, and the largest images-per-call batch.
MAX_SIDE = 8192
MAX_BATCH = 64
#: Knobs that belong to the denoiser's entry (or the top level).
BUCKET_KNOBS = ("resolutions", "batch_size", "guidance", "tensor_parallel_size")
#: Most devices one denoiser is split across.
MAX_TENSOR_PARALLEL = 64
#: Pipeline components a config may place (the VAE's two halves share the ``vae`` entry).
COMPONENT_NAMES = ("text_encoder", "text_encoder_2", "text_encoder_3", "unet", "transformer", "vae")
DENOISERS = ("unet", "transformer")


def _resolutions(value: Any) -> tuple[tuple[int, int], ...]:
    example = "resolutions=[[512, 512], [768, 512]] (height, width)"
    if not isinstance(value, (list, tuple)) or not value or len(value) > MAX_RESOLUTIONS:
        raise NPUConfigError(f"resolutions={short_repr(value)} is invalid: give 1 to {MAX_RESOLUTIONS} "
                             f"[height, width] pairs, e.g. {example}")
    pairs = []
    for pair in value:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or any(
                not isinstance(v, int) or isinstance(v, bool) or not 8 <= v <= MAX_SIDE for v in pair):
            raise NPUConfigError(f"resolutions holds {short_repr(pair)}: each entry must be [height, width] in "
                                 f"pixels, integers in [8, {MAX_SIDE}], e.g. {example}")
        pairs.append((pair[0], pair[1]))
    if len(set(pairs)) != len(pairs):
        raise NPUConfigError(f"resolutions={short_repr(value)} lists a resolution twice; list each once")
    return tuple(pairs)


def _guidance(value: Any) -> tuple[bool, ...]:
    if isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or len(set(value)) != len(value) or any(
            not isinstance(v, bool) for v in value):
        raise NPUConfigError(f"guidance={short_repr(value)} is invalid: give [True] (classifier-free guidance, "
                             "guidance_scale > 1: the denoiser runs twice the batch), [False] (guidance_scale <= 1) "
                             "or [True, False] (both, one denoiser graph each)")
    return tuple(sorted(value, reverse=True))


@dataclass(frozen=True)
class NPUDiffusionConfig:
    """Compile configuration of a Diffusers pipeline.

    Args:
        resolutions: the (height, width) buckets in pixels; a call at another size is refused. Default:
            the denoiser's own ``sample_size`` times the VAE scale factor.
        batch_size: images per call (prompts x ``num_images_per_prompt``); fewer run padded, more are refused.
        guidance: which classifier-free-guidance modes are compiled (True doubles the denoiser batch).
        tensor_parallel_size: devices the denoiser (UNet or SD3 transformer) is split across; it must divide the
            UNet's group-norm groups and attention heads (``unet_parallel``), the transformer's heads.
        dtype: compute and weight dtype (float32, float16, bfloat16).
        npu: target device spec, a preset name or a JSON spec file path.
        devices: runtime option: the simulated device of each component (default 0 for every one); the denoiser
            under tensor parallelism takes a list, one device per rank (default 0, 1, ...).
        profile: runtime option: record every op on its device's track (``pipe.npu_profile``).
    """

    resolutions: tuple[tuple[int, int], ...] | None = None
    batch_size: int = 1
    guidance: tuple[bool, ...] = (True,)
    tensor_parallel_size: int = 1
    dtype: str = "float32"
    npu: str = "atom"
    devices: dict[str, int | list[int]] = field(default_factory=dict, metadata={"runtime": True})
    profile: bool = field(default=False, metadata={"runtime": True})

    def __post_init__(self):
        if self.resolutions is not None:
            object.__setattr__(self, "resolutions", _resolutions(self.resolutions))
        object.__setattr__(self, "guidance", _guidance(self.guidance))
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or not \
                1 <= self.batch_size <= MAX_BATCH:
            raise NPUConfigError(f"batch_size={short_repr(self.batch_size)} is invalid: give the images per call, an "
                                 f"integer in [1, {MAX_BATCH}]")
        if isinstance(self.npu, os.PathLike):
            object.__setattr__(self, "npu", os.fspath(self.npu))
        if not isinstance(self.npu, str):
            raise NPUConfigError(f"npu={short_repr(self.npu)} is invalid: give a preset name {sorted(PRESETS)} or "
                                 "the path of a JSON spec file")
        if self.dtype not in SUPPORTED_DTYPES:
            raise NPUConfigError(f"dtype={short_repr(self.dtype)} is invalid: use one of {list(SUPPORTED_DTYPES)}")
        size = self.tensor_parallel_size
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_TENSOR_PARALLEL:
            raise NPUConfigError(f"tensor_parallel_size={short_repr(size)} is invalid: give the devices the "
                                 f"denoiser is split across, an integer in [1, {MAX_TENSOR_PARALLEL}]")
        if not isinstance(self.devices, dict) or any(
                name not in COMPONENT_NAMES or not _device_ids(d) for name, d in self.devices.items()):
            raise NPUConfigError(f"devices={short_repr(self.devices)} is invalid: map components "
                                 f"{list(COMPONENT_NAMES)} to device ids >= 0 (a list for a split denoiser), e.g. "
                                 "{'transformer': [1, 2], 'vae': 0}")
        if not isinstance(self.profile, bool):
            raise NPUConfigError(f"profile={short_repr(self.profile)} is invalid: use True or False")

    @classmethod
    def coerce(cls, value: Any) -> "NPUDiffusionConfig":
        """An ``NPUDiffusionConfig`` from itself, None (defaults) or the nested dict of the module docstring."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise NPUConfigError(f"npu_config={short_repr(value)} is invalid: pass an NPUDiffusionConfig or a dict "
                                 "such as {'unet': {'resolutions': [[512, 512]], 'batch_size': 1, 'device': 0}}")
        flat: dict[str, Any] = {}
        devices: dict[str, int] = dict(value.get("devices") or {})
        for key, entry in value.items():
            if key in COMPONENT_NAMES:
                flat.update(_component_entry(key, entry, devices))
            elif key != "devices":
                flat[key] = entry
        known = {"resolutions", "batch_size", "guidance", "tensor_parallel_size", "dtype", "npu", "profile"}
        unknown = sorted(set(flat) - known)
        if unknown:
            raise NPUConfigError(f"npu_config has unknown diffusion knobs {short_repr(unknown)}; the knobs are "
                                 f"{sorted(known)} and one entry per component {list(COMPONENT_NAMES)}")
        return cls(**flat, devices=devices)

    def resolve(self, default_resolution: tuple[int, int], scale: int) -> "NPUDiffusionConfig":
        """Fills the default resolution and checks each against the latent grid (multiples of ``scale``)."""
        resolutions = self.resolutions or (default_resolution,)
        bad = [list(r) for r in resolutions if r[0] % scale or r[1] % scale]
        if bad:
            raise NPUConfigError(f"resolutions {bad} are not multiples of {scale} pixels (the VAE scale factor times "
                                 f"the denoiser's downsampling); use multiples of {scale}, e.g. "
                                 f"{[[-(-r[0] // scale) * scale, -(-r[1] // scale) * scale] for r in bad]}")
        return replace(self, resolutions=resolutions)

    def device_ids(self, component: str, ranks: int = 1) -> list[int]:
        """The devices a component runs on, one per rank (the VAE's halves: ``vae``); checked against ``ranks``."""
        given = self.devices.get(component, list(range(ranks)) if ranks > 1 else 0)
        ids = [given] if isinstance(given, int) else list(given)
        if len(ids) != ranks or len(set(ids)) != len(ids):
            raise NPUConfigError(f"devices[{component!r}]={short_repr(given)} must list {ranks} distinct device ids "
                                 f"(the component is compiled for {ranks} device{'s' if ranks > 1 else ''})")
        return ids

    def to_dict(self) -> dict[str, Any]:
        """The compile knobs (runtime options left out), JSON-ready."""
        return {"resolutions": [list(r) for r in self.resolutions] if self.resolutions else None,
                "batch_size": self.batch_size, "guidance": list(self.guidance),
                "tensor_parallel_size": self.tensor_parallel_size, "dtype": self.dtype, "npu": self.npu}

    def runtime(self) -> dict[str, Any]:
        return {"devices": dict(self.devices), "profile": self.profile}


def _component_entry(name: str, entry: Any, devices: dict[str, int]) -> dict[str, Any]:
    """A component's nested entry: its ``device`` goes to ``devices``, the denoiser's bucket knobs up a level."""
    if not isinstance(entry, dict):
        raise NPUConfigError(f"npu_config[{name!r}]={short_repr(entry)} is invalid: give a dict such as "
                             "{'device': 0}")
    allowed = {"device"} | (set(BUCKET_KNOBS) if name in DENOISERS else set())
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise NPUConfigError(f"npu_config[{name!r}] has unknown knobs {unknown}; a {name} entry takes "
                             f"{sorted(allowed)} (only the denoiser is split across devices)")
    if "device" in entry:
        devices[name] = entry["device"]
    return {key: entry[key] for key in BUCKET_KNOBS if key in entry}


def _device_ids(value: Any) -> bool:
    """A device id >= 0, or a non-empty list of them."""
    values = value if isinstance(value, list) and value else [value]
    return all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values)


def config_from_json(text: str | None) -> dict[str, Any]:
    """The nested ``npu_config`` of a command line: a JSON object, or the path of a JSON file holding one."""
    if not text:
        return {}
    path = Path(text)
    try:
        value = json.loads(path.read_text() if path.is_file() else text)
    except json.JSONDecodeError as err:
        raise NPUConfigError(f"--pipeline-config is neither a JSON object nor a JSON file ({err})") from None
    if not isinstance(value, dict):
        raise NPUConfigError("--pipeline-config must be a JSON object such as "
                             '\'{"unet": {"resolutions": [[512, 512]], "batch_size": 1}}\'')
    return value
