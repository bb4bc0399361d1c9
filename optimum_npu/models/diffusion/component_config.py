"""The compile knobs of each Diffusers component: one config class per component family.

| family | config | knobs |
|---|---|---|
| ``diffusion_unet``, ``diffusion_transformer`` | ``NPUDenoiserConfig`` | ``resolutions``, ``batch_size``, ``guidance``, ``tensor_parallel_size`` (+ derived ``vae_scale_factor``, ``text_tokens``, ``text_embeds_dim``) |
| ``diffusion_vae`` | ``NPUVAEConfig`` | ``resolutions``, ``batch_size``, ``parts`` (``decoder`` and/or ``encoder``) |
| ``diffusion_text_encoder`` | ``NPUTextEncoderConfig`` | ``batch_size``, ``max_length`` |

Every config also has ``dtype`` and ``npu``, and the runtime options ``device`` (an id, or one per rank for a
split denoiser) and ``profile``. A component compiled alone takes its config as ``npu_config``; inside a
pipeline, the nested entry of a component takes only its ``pipeline_knobs`` (the pipeline derives the rest:
the VAE and text encoders follow the denoiser's resolutions and batch, the denoiser's text length follows the
tokenizers). The validators here are the pipeline config's too (``npu_config.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

from optimum_npu.device.spec import PRESETS
from optimum_npu.models.decoder.npu_config import SUPPORTED_DTYPES, NPUConfigError
from optimum_npu.models.decoder.stored_config import short_repr
from optimum_npu.models.knobs import refuse_changed_knobs

#: Most resolutions (each one graph per guidance mode for the denoiser, one for each VAE part).
MAX_RESOLUTIONS = 16
#: Largest side in pixels a bucket may have, the largest images-per-call batch, the longest text.
MAX_SIDE = 8192
MAX_BATCH = 64
MAX_TOKENS = 4096
#: Most devices one denoiser is split across.
MAX_TENSOR_PARALLEL = 64
#: The VAE halves a ``NPUVAEConfig`` may compile, and the graph kind of each.
VAE_PARTS = {"decoder": "vae_decoder", "encoder": "vae_encoder"}


def check_resolutions(value: Any) -> tuple[tuple[int, int], ...]:
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


def check_guidance(value: Any) -> tuple[bool, ...]:
    if isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or len(set(value)) != len(value) or any(
            not isinstance(v, bool) for v in value):
        raise NPUConfigError(f"guidance={short_repr(value)} is invalid: give [True] (classifier-free guidance, "
                             "guidance_scale > 1: the denoiser runs twice the batch), [False] (guidance_scale <= 1) "
                             "or [True, False] (both, one denoiser graph each)")
    return tuple(sorted(value, reverse=True))


def check_count(name: str, value: Any, high: int, what: str) -> None:
    """An integer knob in [1, ``high``]; ``what`` says what it counts."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= high:
        raise NPUConfigError(f"{name}={short_repr(value)} is invalid: give {what}, an integer in [1, {high}]")


def check_target(dtype: Any, npu: Any) -> str:
    """Checks ``dtype`` and returns ``npu`` as a string (a preset name or a spec file path)."""
    npu = os.fspath(npu) if isinstance(npu, os.PathLike) else npu
    if not isinstance(npu, str):
        raise NPUConfigError(f"npu={short_repr(npu)} is invalid: give a preset name {sorted(PRESETS)} or "
                             "the path of a JSON spec file")
    if dtype not in SUPPORTED_DTYPES:
        raise NPUConfigError(f"dtype={short_repr(dtype)} is invalid: use one of {list(SUPPORTED_DTYPES)}")
    return npu


def check_multiples(resolutions: tuple[tuple[int, int], ...], multiple: int, why: str) -> None:
    """Every resolution a multiple of ``multiple`` pixels (``why``: what sets the multiple)."""
    bad = [list(r) for r in resolutions if r[0] % multiple or r[1] % multiple]
    if bad:
        rounded = [[-(-h // multiple) * multiple, -(-w // multiple) * multiple] for h, w in bad]
        raise NPUConfigError(f"resolutions {bad} are not multiples of {multiple} pixels ({why}); use multiples of "
                             f"{multiple}, e.g. {rounded}")


def is_device_ids(value: Any) -> bool:
    """A device id >= 0, or a non-empty list of them."""
    values = value if isinstance(value, list) and value else [value]
    return all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values)


def _jsonable(value: Any) -> Any:
    return [_jsonable(v) for v in value] if isinstance(value, tuple) else value


@dataclass(frozen=True)
class ComponentConfig:
    """What every component's config has (see the subclasses for their bucket knobs).

    Args:
        dtype: compute and weight dtype (float32, float16, bfloat16).
        npu: target device spec, a preset name or a JSON spec file path.
        device: runtime option: the simulated device (a list, one per rank, for a split denoiser).
        profile: runtime option: record every op on its device's track.
    """

    dtype: str = "float32"
    npu: str = "atom"
    device: int | list[int] | None = field(default=None, metadata={"runtime": True})
    profile: bool = field(default=False, metadata={"runtime": True})

    #: The knobs a pipeline's nested entry for this component takes.
    pipeline_knobs: ClassVar[tuple[str, ...]] = ("device",)
    #: Knobs a pipeline derives from its other components (a component compiled alone may set them).
    derived_knobs: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self):
        object.__setattr__(self, "npu", check_target(self.dtype, self.npu))
        if self.device is not None and not is_device_ids(self.device):
            raise NPUConfigError(f"device={short_repr(self.device)} is invalid: give a device id >= 0 (a list of "
                                 "them, one per rank, for a split denoiser)")
        if not isinstance(self.profile, bool):
            raise NPUConfigError(f"profile={short_repr(self.profile)} is invalid: use True or False")

    @classmethod
    def knobs(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def coerce(cls, value: Any, where: str = "npu_config") -> "ComponentConfig":
        """A config from itself, None (defaults) or a dict of its knobs; errors start with ``where``."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise NPUConfigError(f"{where}={short_repr(value)} is invalid: pass a {cls.__name__} or a dict of its "
                                 f"knobs {cls.knobs()}")
        unknown = sorted(set(value) - set(cls.knobs()))
        if unknown:
            raise NPUConfigError(f"{where} has unknown knobs {short_repr(unknown)}; a {cls.__name__} takes "
                                 f"{cls.knobs()}")
        try:
            return cls(**value)
        except NPUConfigError as err:
            raise NPUConfigError(f"{where}: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        """The compile knobs (runtime options left out), JSON-ready."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self) if not f.metadata.get("runtime")}

    def runtime(self) -> dict[str, Any]:
        return {"device": self.device, "profile": self.profile}

    @property
    def ranks(self) -> int:
        """Devices one copy of the component runs on."""
        return 1

    def device_ids(self, where: str = "device") -> list[int]:
        """The devices the component runs on, one per rank (default 0, or 0, 1, ... when split)."""
        given = self.device if self.device is not None else (list(range(self.ranks)) if self.ranks > 1 else 0)
        ids = [given] if isinstance(given, int) else list(given)
        if len(ids) != self.ranks or len(set(ids)) != len(ids):
            raise NPUConfigError(f"{where}={short_repr(given)} must list {self.ranks} distinct device ids (the "
                                 f"component is compiled for {self.ranks} device{'s' if self.ranks > 1 else ''})")
        return ids

    def with_runtime(self, requested: Any, where: str) -> "ComponentConfig":
        """This (stored) config with the runtime options of ``requested``; a differing compile knob is an error."""
        if requested is None:
            return self
        asked = type(self).coerce(requested, where)
        given = set(requested) if isinstance(requested, dict) else set(self.knobs())
        stored, wanted = self.to_dict(), asked.to_dict()
        refuse_changed_knobs(where, sorted(k for k in stored if k in given and wanted[k] != stored[k]),
                             "'device' and 'profile'")
        return replace(self, **asked.runtime())

    def graph_rows(self) -> set[int]:
        """The batch of each compiled graph."""
        return {self.batch_size}


@dataclass(frozen=True)
class NPUDenoiserConfig(ComponentConfig):
    """Compile knobs of a UNet or SD3 transformer.

    Args:
        resolutions: the (height, width) buckets in pixels (default: ``sample_size`` x ``vae_scale_factor``).
        batch_size: images per call; the graph runs twice that many rows with guidance.
        guidance: which classifier-free-guidance modes are compiled (True doubles the batch).
        tensor_parallel_size: devices the denoiser is split across.
        vae_scale_factor: pixels per latent position (a pipeline takes its VAE's; alone: 8, as in SD/SDXL/SD3).
        text_tokens: positions of ``encoder_hidden_states`` (a pipeline: its tokenizers'; alone: 77, SD3 333).
        text_embeds_dim: SDXL's pooled text embedding size (``added_cond_kwargs["text_embeds"]``); derived from
            the UNet's config when left out (6 time ids).
    """

    resolutions: tuple[tuple[int, int], ...] | None = None
    batch_size: int = 1
    guidance: tuple[bool, ...] = (True,)
    tensor_parallel_size: int = 1
    vae_scale_factor: int | None = None
    text_tokens: int | None = None
    text_embeds_dim: int | None = None

    pipeline_knobs: ClassVar[tuple[str, ...]] = ("resolutions", "batch_size", "guidance", "tensor_parallel_size",
                                                 "device")
    derived_knobs: ClassVar[tuple[str, ...]] = ("vae_scale_factor", "text_tokens", "text_embeds_dim")

    def __post_init__(self):
        super().__post_init__()
        if self.resolutions is not None:
            object.__setattr__(self, "resolutions", check_resolutions(self.resolutions))
        object.__setattr__(self, "guidance", check_guidance(self.guidance))
        check_count("batch_size", self.batch_size, MAX_BATCH, "the images per call")
        check_count("tensor_parallel_size", self.tensor_parallel_size, MAX_TENSOR_PARALLEL,
                    "the devices the denoiser is split across")
        for name, high, what in (("vae_scale_factor", 64, "pixels per latent position"),
                                 ("text_tokens", MAX_TOKENS, "the text positions the denoiser attends to"),
                                 ("text_embeds_dim", 1 << 16, "the pooled text embedding size")):
            if getattr(self, name) is not None:
                check_count(name, getattr(self, name), high, what)

    @property
    def ranks(self) -> int:
        return self.tensor_parallel_size

    def graph_rows(self) -> set[int]:
        return {self.batch_size * (2 if guided else 1) for guided in self.guidance}


@dataclass(frozen=True)
class NPUVAEConfig(ComponentConfig):
    """Compile knobs of an AutoencoderKL.

    Args:
        resolutions: the (height, width) image buckets in pixels (default: the VAE's ``sample_size``).
        batch_size: images per call.
        parts: which halves are compiled: ``["decoder"]`` (text-to-image), ``["encoder"]`` or both (img2img).
    """

    resolutions: tuple[tuple[int, int], ...] | None = None
    batch_size: int = 1
    parts: tuple[str, ...] = ("decoder",)

    def __post_init__(self):
        super().__post_init__()
        if self.resolutions is not None:
            object.__setattr__(self, "resolutions", check_resolutions(self.resolutions))
        check_count("batch_size", self.batch_size, MAX_BATCH, "the images per call")
        parts = [self.parts] if isinstance(self.parts, str) else self.parts
        if not isinstance(parts, (list, tuple)) or not parts or len(set(parts)) != len(parts) or any(
                p not in VAE_PARTS for p in parts):
            raise NPUConfigError(f"parts={short_repr(self.parts)} is invalid: give ['decoder'], ['encoder'] or "
                                 "['decoder', 'encoder'] (the encoder is what image-to-image and inpainting need)")
        object.__setattr__(self, "parts", tuple(p for p in VAE_PARTS if p in parts))


@dataclass(frozen=True)
class NPUTextEncoderConfig(ComponentConfig):
    """Compile knobs of a CLIP or T5 text encoder.

    Args:
        batch_size: prompts per call.
        max_length: tokens per prompt (a pipeline: its tokenizer's ``model_max_length``, T5 256; alone: CLIP's
            ``max_position_embeddings``, T5 256).
    """

    batch_size: int = 1
    max_length: int | None = None

    derived_knobs: ClassVar[tuple[str, ...]] = ("max_length",)

    def __post_init__(self):
        super().__post_init__()
        check_count("batch_size", self.batch_size, MAX_BATCH, "the prompts per call")
        if self.max_length is not None:
            check_count("max_length", self.max_length, MAX_TOKENS, "the tokens per prompt")
