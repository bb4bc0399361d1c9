"""The Diffusers family's compile knobs: resolution x batch x guidance buckets, and a device per component.

One dict configures a whole pipeline, in the shape the peers use (a nested entry per component)::

    {"unet": {"resolutions": [[1024, 1024], [768, 1344]], "batch_size": 2, "guidance": [True], "device": [1, 2],
              "tensor_parallel_size": 2},
     "text_encoder": {"device": 0}, "vae": {"device": 3}, "dtype": "float32", "npu": "atom"}

``resolutions``, ``batch_size``, ``guidance`` and ``tensor_parallel_size`` belong to the denoiser (``unet`` or
``transformer``): the VAE is compiled at the same resolutions and batch, the text encoders at the same batch.
They may also be given at the top level. ``device`` (and ``profile``) are runtime options, chosen again at
load time; a split denoiser takes one device per rank. Each entry is checked by its component's config class
(``component_config.py``) and each component folder is compiled with the config ``component_config(folder)``
gives, the same class that compiles it alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from dataclasses import dataclass, field, replace
from typing import Any

from optimum_npu.models.decoder.npu_config import NPUConfigError
from optimum_npu.models.decoder.stored_config import short_repr
from optimum_npu.models.diffusion.component_config import (MAX_BATCH, MAX_TENSOR_PARALLEL, ComponentConfig,
                                                           NPUDenoiserConfig, NPUTextEncoderConfig, NPUVAEConfig,
                                                           check_count, check_guidance, check_multiples,
                                                           check_resolutions, check_target, is_device_ids)

#: Knobs that belong to the denoiser's entry (or the top level).
BUCKET_KNOBS = ("resolutions", "batch_size", "guidance", "tensor_parallel_size")
#: Pipeline components a config may place (the VAE's two halves share the ``vae`` entry).
COMPONENT_NAMES = ("text_encoder", "text_encoder_2", "text_encoder_3", "unet", "transformer", "vae")
DENOISERS = ("unet", "transformer")
#: The config class each nested entry is parsed into (its ``pipeline_knobs`` are what the entry takes).
ENTRY_CONFIGS = {"text_encoder": NPUTextEncoderConfig, "text_encoder_2": NPUTextEncoderConfig,
                 "text_encoder_3": NPUTextEncoderConfig, "unet": NPUDenoiserConfig, "transformer": NPUDenoiserConfig,
                 "vae": NPUVAEConfig}


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
            object.__setattr__(self, "resolutions", check_resolutions(self.resolutions))
        object.__setattr__(self, "guidance", check_guidance(self.guidance))
        check_count("batch_size", self.batch_size, MAX_BATCH, "the images per call")
        object.__setattr__(self, "npu", check_target(self.dtype, self.npu))
        check_count("tensor_parallel_size", self.tensor_parallel_size, MAX_TENSOR_PARALLEL,
                    "the devices the denoiser is split across")
        if not isinstance(self.devices, dict) or any(
                name not in COMPONENT_NAMES or not is_device_ids(d) for name, d in self.devices.items()):
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
        check_multiples(resolutions, scale, "the VAE scale factor times the denoiser's downsampling")
        return replace(self, resolutions=resolutions)

    def component_config(self, folder: str) -> ComponentConfig:
        """The config of one component folder (``unet``, ``vae_decoder``...): the knobs its config class shares
        with this one (same names), the component's device; the derived knobs are filled by ``plan.py``."""
        entry = "vae" if folder.startswith("vae") else folder
        config_class = ENTRY_CONFIGS[entry]
        shared = {name: getattr(self, name) for name in config_class.knobs() if name in self.__dataclass_fields__}
        parts = {"parts": (folder.removeprefix("vae_"),)} if entry == "vae" else {}
        return config_class(**shared, **parts, device=self.devices.get(entry))

    def to_dict(self) -> dict[str, Any]:
        """The compile knobs (runtime options left out), JSON-ready."""
        return {"resolutions": [list(r) for r in self.resolutions] if self.resolutions else None,
                "batch_size": self.batch_size, "guidance": list(self.guidance),
                "tensor_parallel_size": self.tensor_parallel_size, "dtype": self.dtype, "npu": self.npu}

    def runtime(self) -> dict[str, Any]:
        return {"devices": dict(self.devices), "profile": self.profile}


def _component_entry(name: str, entry: Any, devices: dict[str, int]) -> dict[str, Any]:
    """A component's nested entry, parsed by its config class: ``device`` goes to ``devices``, the denoiser's
    bucket knobs up a level (the other components follow them)."""
    config_class = ENTRY_CONFIGS[name]
    if not isinstance(entry, dict):
        raise NPUConfigError(f"npu_config[{name!r}]={short_repr(entry)} is invalid: give a dict such as "
                             "{'device': 0}")
    unknown = sorted(set(entry) - set(config_class.pipeline_knobs))
    if unknown:
        raise NPUConfigError(f"npu_config[{name!r}] has unknown knobs {unknown}; a {name} entry takes "
                             f"{sorted(config_class.pipeline_knobs)} (only the denoiser has bucket knobs and is split "
                             "across devices; the others follow its resolutions and batch)")
    config_class.coerce(entry, f"npu_config[{name!r}]")   # each knob checked by the component's own class
    if "device" in entry:
        devices[name] = entry["device"]
    return {key: entry[key] for key in BUCKET_KNOBS if key in entry}


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


def diffusers_export_config(what: str, flat: tuple[str, ...]):
    """The ``export_config`` hook of a Diffusers family entry (``what``: pipeline or component): the JSON of
    ``--pipeline-config`` (its ``npu_config``) over the flat knobs ``flat`` it takes; other knobs are refused."""
    def export_config(knobs: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
        given = sorted(k for k in knobs if k not in flat and knobs[k] is not None)
        if given or options.get("visual_buckets"):
            flags = ", ".join("--" + k.replace("_", "-") for k in flat)
            raise NPUConfigError(f"{given or ['visual_buckets']} apply to language models; this is a Diffusers "
                                 f"{what}: its knobs are --pipeline-config (JSON: its npu_config) and {flags}")
        chosen = {k: knobs[k] for k in flat if knobs.get(k) is not None}
        return {**chosen, **config_from_json(options.get("pipeline_config"))}   # the JSON's knobs win
    return export_config
