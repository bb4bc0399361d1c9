"""The public component classes: what a compiled pipeline holds, and each compiled, saved and loaded alone.

| class | family | replaces | call |
|---|---|---|---|
| ``NPUUNet2DConditionModel`` | ``diffusion_unet`` | UNet2DConditionModel | ``unet(sample, t, encoder_hidden_states=..., added_cond_kwargs=...)`` |
| ``NPUSD3Transformer2DModel`` | ``diffusion_transformer`` | SD3Transformer2DModel | ``transformer(hidden_states=..., timestep=..., ...)`` |
| ``NPUAutoencoderKL`` | ``diffusion_vae`` | AutoencoderKL | ``vae.decode(z)``, ``vae.encode(x)`` |
| ``NPUDiffusionCLIPTextModel``, ``NPUDiffusionCLIPTextModelWithProjection``, ``NPUT5EncoderModel`` (any: ``NPUDiffusionTextEncoder``) | ``diffusion_text_encoder`` | the Transformers class of the name | ``text_encoder(input_ids)`` |

``from_pretrained(folder, export=True, npu_config=...)`` compiles a Diffusers / Transformers component
folder (``npu_config``: the family's config class, ``component_config.py``); ``from_pretrained(folder)``
loads a compiled component: one compiled alone, or a component folder of a compiled pipeline (each carries
its own manifest). ``from_model`` compiles an in-memory module.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import diffusers
import torch
import transformers
from diffusers.configuration_utils import FrozenDict
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKLOutput
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPooling
from transformers.models.clip.modeling_clip import CLIPTextModelOutput

from optimum_npu.compile.artifact import ArtifactError, verify_artifact
from optimum_npu.compile.artifact_write import copy_artifact
from optimum_npu.compile.weights import load_weights, stored_weight_bytes
from optimum_npu.device.device import DeviceRegistry
from optimum_npu.device.engine import DeviceEngine
from optimum_npu.device.profiler import Profiler
from optimum_npu.hub.card import CardSection
from optimum_npu.hub.cached_compile import compile_with_cache
from optimum_npu.models.base import HUB_KWARGS, resolve_checkpoint
from optimum_npu.models.diffusion.cache_key import component_cache_key
from optimum_npu.models.diffusion.component_plan import resolve
from optimum_npu.models.diffusion.components import CLASSES
from optimum_npu.models.diffusion.export import compile_component
from optimum_npu.models.diffusion.modules import NPUAutoencoder, NPUComponent, NPUDenoiser, NPUTextEncoder
from optimum_npu.models.diffusion.push import push_compiled
from optimum_npu.models.diffusion.stats import DiffusionStats
from optimum_npu.models.diffusion.stored_component import COMPONENT_CONFIGS, read_component
from optimum_npu.models.registry import FAMILY_CLASSES
from optimum_npu.schema import weights_file
from optimum_npu.untrusted import expect_dict, load_json

#: HF classes that come from Diffusers (the text encoders come from Transformers).
DIFFUSERS_CLASSES = CLASSES["unet"] + CLASSES["transformer"] + CLASSES["vae_decoder"]


class NPUComponentModel:
    """Compiling, loading and saving one component alone (first base of the public component classes)."""

    #: The family an artifact of this class stores, its graph kind, and the HF classes it compiles.
    family_name: ClassVar[str]
    kind: ClassVar[str]
    hf_classes: ClassVar[tuple[str, ...]]

    @classmethod
    def from_pretrained(cls, model_id: str | os.PathLike, *, export: bool = False, npu_config: Any = None,
                        compile_cache: Any = None, device_registry: DeviceRegistry | None = None, **kwargs):
        """Loads a compiled component, or compiles a component folder when ``export=True``.

        Args:
            model_id: a local directory or a Hub repo id: a Diffusers / Transformers component folder
                (``export=True``), a compiled component, or a component folder of a compiled pipeline.
            export: compile (True) or load (False).
            npu_config: the family's config (object or dict) when exporting; ``device`` / ``profile`` at load.
            compile_cache: as for the pipelines (None: on unless ``OPTIMUM_NPU_DISABLE_CACHE=1``).
            device_registry: the simulated node the component is loaded on.
            kwargs: Hub download options (``revision``, ``token``...).
        """
        unknown = sorted(set(kwargs) - set(HUB_KWARGS))
        if unknown:
            raise TypeError(f"from_pretrained() got unexpected arguments {unknown}; it takes export, npu_config, "
                            f"compile_cache, device_registry and the Hub options {list(HUB_KWARGS)}")
        path = resolve_checkpoint(model_id, kwargs)
        if not export:
            return cls._load(path, npu_config, device_registry)
        return cls.from_model(cls._eager(path), npu_config, compile_cache, device_registry)

    @classmethod
    def _eager(cls, path: Path) -> Any:
        """The eager module of a component folder, its class looked up by name in ``hf_classes``."""
        document = expect_dict(load_json(path / "config.json", what=f"{path}/config.json", error=ArtifactError),
                               f"{path}/config.json", ArtifactError)
        names = [document.get("_class_name"), *(document.get("architectures") or [])]
        name = next((n for n in names if isinstance(n, str) and n in cls.hf_classes), None)
        if name is None:
            raise ValueError(f"{path} holds a {str(names[0] or names[1:])[:80]}, not one of {list(cls.hf_classes)} "
                             f"that {cls.__name__} compiles; pass the component's own folder (e.g. "
                             "'<pipeline>/unet') or use the class of that component")
        library = diffusers if name in DIFFUSERS_CLASSES else transformers
        return getattr(library, name).from_pretrained(path).eval()   # name is one of the closed tuple hf_classes

    @classmethod
    def from_model(cls, module: Any, npu_config: Any = None, compile_cache: Any = None,
                   device_registry: DeviceRegistry | None = None):
        """Compiles an in-memory component (a module of one of ``hf_classes``) and loads it on the device."""
        if type(module).__name__ not in cls.hf_classes:
            raise ValueError(f"{cls.__name__} compiles {list(cls.hf_classes)}, not {type(module).__name__}")
        where = f"{cls.__name__} npu_config"
        config = resolve(cls.kind, module, COMPONENT_CONFIGS[cls.family_name].coerce(npu_config, where))
        tmp = tempfile.TemporaryDirectory(prefix="optimum-npu-component-")
        target = Path(tmp.name) / "artifact"
        compile_with_cache(target, lambda: component_cache_key(module, cls.kind, config),
                           lambda path: compile_component(module, cls.kind, config, path), compile_cache)
        loaded = cls._load(target, config.runtime(), device_registry)
        loaded._npu_tmp = tmp
        return loaded

    @classmethod
    def _load(cls, root: Path, npu_config: Any, registry: DeviceRegistry | None):
        verify_artifact(Path(root))
        stored = read_component(Path(root), None, npu_config, f"{cls.__name__} npu_config")
        if stored.family != cls.family_name or stored.class_name not in cls.hf_classes:
            raise ValueError(f"{root} holds a compiled {stored.class_name}, which {cls.__name__} does not load; load "
                             f"it with {FAMILY_CLASSES[stored.family]} (or NPUAutoModel)")
        profiler = Profiler() if stored.config.profile else None
        component = build_component(Path(root), stored, stored.spec, stored.config.device_ids(), cls.kind,
                                    DiffusionStats(), registry, profiler)
        return cls._assemble(component, stored.hf_config)

    @classmethod
    def _assemble(cls, component: NPUComponent, hf_config: dict) -> Any:
        """The loaded object of this class around a built component (the VAE wraps its parts)."""
        return component

    @property
    def npu_stats(self) -> DiffusionStats:
        """Simulated seconds of every call since loading, and memory per device."""
        return self._stats

    @property
    def npu_config(self) -> Any:
        """The compiled config (its family's config class), with the runtime options it was loaded with."""
        return self._npu_config

    @property
    def npu_profile(self) -> Profiler:
        if getattr(self, "_npu_profiler", None) is None:
            raise ValueError("profiling is off for this component; load it with npu_config={'profile': True}")
        return self._npu_profiler

    @property
    def artifact_dir(self) -> Path:
        return self._npu_artifact

    @property
    def npu_graphs(self) -> list[str]:
        """The compiled bucket graphs."""
        return list(self._engine.graphs)

    def save_pretrained(self, save_directory: str | os.PathLike, **unused) -> None:
        """Copies the compiled component (only the files its manifest lists) atomically to ``save_directory``."""
        copy_artifact(self._npu_artifact, Path(save_directory))

    def push_to_hub(self, repo_id: str, **options: Any) -> Any:
        """Uploads the compiled component (its listed files) with a model card naming its class and buckets.

        Args are those of the pipelines' ``push_to_hub`` (``token``, ``private``, ``revision``,
        ``commit_message``, ``commit_description``, ``base_model``, ``model_card``)."""
        parts = {id(p): p for p in (self, getattr(self, "decoder_part", None), getattr(self, "encoder_part", None))
                 if isinstance(p, NPUComponent)}
        return push_compiled(self._npu_artifact, repo_id, self.card_section(repo_id), list(parts.values()),
                             **options)

    @classmethod
    def card_section(cls, repo_id: str) -> CardSection:
        """The model card's usage part: load with this class."""
        usage = (f"## Use\n\n```python\nfrom optimum_npu import {cls.__name__}\n\n"
                 f'{cls.kind} = {cls.__name__}.from_pretrained("{repo_id}")   # verified against npu_manifest.json\n'
                 f"print({cls.kind}.npu_config, {cls.kind}.npu_stats)\n```")
        return CardSection("text-to-image", usage, ("device", "profile"))


class NPUUNet2DConditionModel(NPUComponentModel, NPUDenoiser):
    """A compiled UNet2DConditionModel (SD 1.x/2.x, SDXL); config: ``NPUDenoiserConfig``."""

    family_name, kind, hf_classes = "diffusion_unet", "unet", CLASSES["unet"]
    output_class = UNet2DConditionOutput


class NPUSD3Transformer2DModel(NPUComponentModel, NPUDenoiser):
    """A compiled SD3Transformer2DModel; config: ``NPUDenoiserConfig`` (``tensor_parallel_size`` splits it)."""

    family_name, kind, hf_classes = "diffusion_transformer", "transformer", CLASSES["transformer"]
    output_class = Transformer2DModelOutput


class NPUAutoencoderKL(NPUComponentModel, NPUAutoencoder):
    """A compiled AutoencoderKL; config: ``NPUVAEConfig`` (``parts``: the decoder, the encoder or both)."""

    family_name, kind, hf_classes = "diffusion_vae", "vae", CLASSES["vae_decoder"]
    outputs = {"decoder": DecoderOutput, "encoder": AutoencoderKLOutput, "distribution": DiagonalGaussianDistribution}

    @classmethod
    def _assemble(cls, component: NPUComponent, hf_config: dict, encoder: NPUComponent | None = None):
        """The VAE of one compiled component (alone: its parts; a pipeline: the decoder, and ``encoder``)."""
        kinds = {graph.attributes.get("kind") for graph in component._graphs}
        vae = cls(component if "vae_decoder" in kinds else None,
                  encoder if encoder is not None else component if "vae_encoder" in kinds else None,
                  FrozenDict(hf_config))
        vae._npu_artifact, vae._npu_profiler, vae._npu_config = (component._npu_artifact, component._npu_profiler,
                                                                  component._npu_config)
        return vae

    @property
    def npu_graphs(self) -> list[str]:
        parts = {id(p): p for p in (self.decoder_part, self.encoder_part) if p is not None}.values()
        return [name for part in parts for name in part._engine.graphs]


class NPUDiffusionTextEncoder(NPUComponentModel, NPUTextEncoder):
    """Any compiled text encoder of a pipeline (loads as the class of its stored HF class); config:
    ``NPUTextEncoderConfig``."""

    family_name, kind = "diffusion_text_encoder", "text_encoder"
    hf_classes = CLASSES["text_encoder"]


class NPUDiffusionCLIPTextModel(NPUDiffusionTextEncoder):
    """A compiled CLIPTextModel (SD, SDXL's first encoder): last hidden state and pooled output."""

    hf_classes, config_class = ("CLIPTextModel",), transformers.CLIPTextConfig

    def text_output(self, first, second, hidden):
        return BaseModelOutputWithPooling(last_hidden_state=first, pooler_output=second, hidden_states=hidden)


class NPUDiffusionCLIPTextModelWithProjection(NPUDiffusionTextEncoder):
    """A compiled CLIPTextModelWithProjection (SDXL's second encoder, SD3's CLIP encoders)."""

    hf_classes, config_class = ("CLIPTextModelWithProjection",), transformers.CLIPTextConfig

    def text_output(self, first, second, hidden):
        return CLIPTextModelOutput(text_embeds=first, last_hidden_state=second, hidden_states=hidden)


class NPUT5EncoderModel(NPUDiffusionTextEncoder):
    """A compiled T5EncoderModel (SD3's third encoder)."""

    hf_classes, config_class = ("T5EncoderModel",), transformers.T5Config

    def text_output(self, first, second, hidden):
        return BaseModelOutput(last_hidden_state=first, hidden_states=hidden)


#: The class of each stored text-encoder HF class and of each denoiser kind (closed tables).
TEXT_ENCODERS = {cls.hf_classes[0]: cls for cls in (
    NPUDiffusionCLIPTextModel, NPUDiffusionCLIPTextModelWithProjection, NPUT5EncoderModel)}
DENOISERS = {"unet": NPUUNet2DConditionModel, "transformer": NPUSD3Transformer2DModel}


def build_component(root: Path, stored: Any, spec: Any, devices: list[int], name: str, stats: DiffusionStats,
                    registry: DeviceRegistry | None, profiler: Profiler | None, owner: str = "") -> NPUComponent:
    """Loads a verified component folder on ``devices``: its text-encoder or denoiser class, or (a VAE) the
    component its ``NPUAutoencoderKL`` wraps. ``name`` names it in stats and traces."""
    size = stored.tensor_parallel_size
    shard = (lambda rank: Path(root) / weights_file(rank, size))
    engine = DeviceEngine(stored.graphs, spec, devices, stored.config.dtype,
                          weights=lambda rank: load_weights(shard(rank)),
                          weight_bytes=lambda rank: stored_weight_bytes(shard(rank)),
                          owner=owner or f"{stored.family}:{name}", registry=registry, profiler=profiler)
    dtype = getattr(torch, stored.config.dtype)
    if stored.kinds[0] == "text_encoder":
        cls = TEXT_ENCODERS[stored.class_name]
        config = cls.config_class.from_dict({k: v for k, v in stored.hf_config.items() if not k.startswith("_")})
        component = cls(name, engine, config, dtype, stats, devices[0])
    elif stored.kinds[0] in DENOISERS:
        component = DENOISERS[stored.kinds[0]](name, engine, FrozenDict(stored.hf_config), dtype, stats, devices[0])
    else:
        component = NPUComponent(name, engine, FrozenDict(stored.hf_config), dtype, stats, devices[0])
    for device in devices:
        stats.memory.setdefault(device, {})[name] = dict(engine.memory)
    component._npu_artifact, component._npu_profiler, component._npu_config = Path(root), profiler, stored.config
    return component
