"""What every compiled Diffusers pipeline adds to Diffusers' own pipeline class.

``NPUDiffusionMixin`` goes first in the bases of a Diffusers pipeline class (``NPUStableDiffusionPipeline(
NPUDiffusionMixin, StableDiffusionPipeline)``): the pipeline object *is* Diffusers' pipeline, its components
swapped for compiled ones, so schedulers (on the host), callbacks, ``generator``, ``negative_prompt``,
``num_images_per_prompt``, ``output_type`` and ``prompt_embeds`` keep working. The mixin adds compiling
(``from_pretrained(..., export=True)``, ``from_pipeline``), loading, ``save_pretrained``, the check of each
call against the compiled buckets (before any compute), ``npu_stats``, ``npu_profile`` and ``release``.
"""

from __future__ import annotations

import inspect
import os
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import torch

from optimum_npu.compile.artifact import verify_artifact
from optimum_npu.compile.artifact_write import copy_artifact
from optimum_npu.device.device import DeviceRegistry
from optimum_npu.device.profiler import Profiler
from optimum_npu.hub.card import CardSection
from optimum_npu.hub.cached_compile import compile_with_cache
from optimum_npu.models.base import HUB_KWARGS, resolve_checkpoint
from optimum_npu.models.diffusion.assemble import (check_precompiled, compiled_components, precompiled_folders,
                                                   with_denoiser_knobs)
from optimum_npu.models.diffusion.cache_key import diffusion_cache_key
from optimum_npu.models.diffusion.component_models import NPUComponentModel
from optimum_npu.models.diffusion.call_check import check_call
from optimum_npu.models.diffusion.export import compile_pipeline
from optimum_npu.models.diffusion.load import load_pipeline
from optimum_npu.models.diffusion.npu_config import COMPONENT_NAMES, NPUDiffusionConfig
from optimum_npu.models.diffusion.plan import default_resolution, folder_configs, latent_multiple
from optimum_npu.models.diffusion.push import push_compiled
from optimum_npu.models.diffusion.stats import DiffusionStats
from optimum_npu.models.diffusion.stored import read_stored

#: Constructor arguments of Diffusers pipelines that a compiled pipeline leaves empty.
UNUSED_PARTS = ("safety_checker", "feature_extractor", "image_encoder")


class NPUDiffusionMixin:
    """Compiled-pipeline behaviour; the concrete classes name their Diffusers class and kind."""

    #: The Diffusers pipeline class of this variant (the eager reference; also the second base).
    eager_class: ClassVar[type]
    #: The pipeline kind an artifact stores (``StableDiffusionPipeline``...): every variant of a kind loads it.
    pipeline_kind: ClassVar[str]
    #: Whether the variant encodes images (img2img, inpainting): then the VAE encoder is compiled.
    needs_vae_encoder: ClassVar[bool] = False

    # ---- construction ---------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, model_id: str | os.PathLike, *, export: bool = False, npu_config: Any = None,
                        compile_cache: Any = None, device_registry: DeviceRegistry | None = None, **kwargs):
        """Loads a compiled pipeline, or compiles a Diffusers pipeline folder when ``export=True``.

        Args:
            model_id: a local directory or a Hub repo id.
            export: compile the Diffusers pipeline (True) or load a compiled artifact (False).
            npu_config: compile knobs (``NPUDiffusionConfig`` or its nested dict) when exporting; runtime
                options (each component's ``device``, ``profile``) when loading.
            compile_cache: as for the model classes (None: on unless ``OPTIMUM_NPU_DISABLE_CACHE=1``).
            device_registry: the simulated node the components are loaded on.
            kwargs: Hub download options (``revision``, ``token``...), and with ``export=True`` compiled
                components to use instead of compiling them (``unet=NPUUNet2DConditionModel.from_pretrained(...)``).
        """
        components = {name: kwargs.pop(name) for name in COMPONENT_NAMES if name in kwargs}
        unknown = sorted(set(kwargs) - set(HUB_KWARGS))
        if unknown:
            raise TypeError(f"from_pretrained() got unexpected arguments {unknown}; it takes export, npu_config, "
                            f"compile_cache, device_registry, compiled components {list(COMPONENT_NAMES)} and the "
                            f"Hub options {list(HUB_KWARGS)}")
        wrong = sorted(name for name, part in components.items() if not isinstance(part, NPUComponentModel))
        if wrong or (components and not export):
            raise TypeError(f"{wrong or sorted(components)}: a pipeline takes compiled components (e.g. "
                            "unet=NPUUNet2DConditionModel.from_pretrained(...)) only with export=True")
        path = resolve_checkpoint(model_id, kwargs)
        if not export:
            return cls._load(path, npu_config, device_registry)
        parts = {name: None for name in UNUSED_PARTS if name in inspect.signature(cls.eager_class).parameters}
        eager = cls.eager_class.from_pretrained(path, **parts, **{name: None for name in components})
        for name, component in components.items():   # Diffusers does not load these; the compiled ones stand in
            setattr(eager, name, component)
        return cls.from_pipeline(eager, npu_config, compile_cache, device_registry)

    @classmethod
    def from_pipeline(cls, pipe: Any, npu_config: Any = None, compile_cache: Any = None,
                      device_registry: DeviceRegistry | None = None):
        """Compiles an in-memory Diffusers pipeline (of this kind) and loads the result on the devices.

        Modules of ``pipe`` that are compiled components (``NPUUNet2DConditionModel``...) are copied into the
        artifact, not compiled (``assemble.py``); the compile cache is then not used (its key covers eager
        weights only)."""
        components = compiled_components(pipe)
        npu_config = with_denoiser_knobs(npu_config, components)
        config = NPUDiffusionConfig.coerce(npu_config).resolve(default_resolution(pipe), latent_multiple(pipe))
        encoder = cls.needs_vae_encoder
        precompiled = check_precompiled(precompiled_folders(components), folder_configs(pipe, config, encoder))
        tmp = tempfile.TemporaryDirectory(prefix="optimum-npu-pipeline-")
        target = Path(tmp.name) / "artifact"
        compile_with_cache(target, lambda: diffusion_cache_key(pipe, cls.pipeline_kind, config, encoder),
                           lambda path: compile_pipeline(pipe, cls.pipeline_kind, config, encoder, path, precompiled),
                           False if precompiled else compile_cache)
        loaded = cls._load(target, config.runtime(), device_registry)
        loaded._npu_tmp = tmp
        return loaded

    @classmethod
    def _load(cls, root: Path, npu_config: Any, registry: DeviceRegistry | None):
        facts = read_stored(Path(root), verify_artifact(Path(root)), npu_config)
        if facts.kind != cls.pipeline_kind:
            raise ValueError(f"{root} holds a compiled {facts.kind}; load it with the NPU class of that kind (or "
                             "an NPUAutoPipelineFor... class)")
        if cls.needs_vae_encoder and "vae_encoder" not in facts.components:
            raise ValueError(f"{root} was compiled without the VAE encoder (a text-to-image pipeline), which "
                             f"{cls.__name__} needs; recompile with {cls.__name__}.from_pretrained(..., export=True)")
        loaded = load_pipeline(Path(root), facts, registry)
        signature = inspect.signature(cls.eager_class).parameters
        kwargs = {name: value for name, value in {**loaded.modules, **facts.options}.items() if name in signature}
        kwargs.update({name: None for name in UNUSED_PARTS if name in signature})
        pipe = cls(**kwargs)
        pipe._npu_artifact, pipe._npu_facts, pipe._npu_loaded = Path(root), facts, loaded
        return pipe

    # ---- running --------------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        """Diffusers' ``__call__``, after the call is checked against the compiled buckets (before any compute)."""
        bound = inspect.signature(self.eager_class.__call__).bind(self, *args, **kwargs)
        images = check_call(self, self._npu_facts.config, bound.arguments)
        with torch.no_grad():
            result = super().__call__(*args, **kwargs)
        self._npu_loaded.stats.images += images
        return result

    @property
    def npu_stats(self) -> DiffusionStats:
        """Simulated seconds per component and per denoising step, per image, and memory per device."""
        return self._npu_loaded.stats

    @property
    def npu_config(self) -> NPUDiffusionConfig:
        return self._npu_facts.config

    @property
    def npu_profile(self) -> Profiler:
        """Every op of every component on its device's track (load with ``npu_config={'profile': True}``)."""
        if self._npu_loaded.profiler is None:
            raise ValueError("profiling is off for this pipeline; load it with npu_config={'profile': True}")
        return self._npu_loaded.profiler

    @property
    def artifact_dir(self) -> Path:
        return self._npu_artifact

    def save_pretrained(self, save_directory: str | os.PathLike, **unused) -> None:
        """Copies the compiled artifact (only the files its manifest lists) atomically to ``save_directory``."""
        copy_artifact(self._npu_artifact, Path(save_directory))

    def push_to_hub(self, repo_id: str, *, token: str | None = None, private: bool | None = None,
                    revision: str | None = None, commit_message: str | None = None,
                    commit_description: str | None = None, base_model: str | None = None, model_card: bool = True,
                    **unused):
        """Uploads the compiled pipeline (its listed files) and a model card listing components and buckets.

        Args are those of the model classes' ``push_to_hub``; the card's figures are the memory per component
        this pipeline reserved. Returns the ``huggingface_hub.CommitInfo`` of the upload commit.
        """
        return push_compiled(self._npu_artifact, repo_id, self.card_section(repo_id), self._npu_loaded.components,
                             token=token, private=private, revision=revision, commit_message=commit_message,
                             commit_description=commit_description, base_model=base_model, model_card=model_card)

    @classmethod
    def card_section(cls, repo_id: str) -> CardSection:
        """The model card's usage part: load with this class, generate, read the figures."""
        usage = ("## Use\n\n```python\nfrom optimum_npu import NPUAutoPipelineForText2Image\n\n"
                 f'pipe = NPUAutoPipelineForText2Image.from_pretrained("{repo_id}")   # verified against '
                 'npu_manifest.json\nimage = pipe("an astronaut riding a horse").images[0]\n'
                 "print(pipe.npu_stats)   # simulated time per component and per denoising step, memory per "
                 "device\n```")
        return CardSection("text-to-image", usage, ("devices", "profile"))

    def release(self) -> None:
        """Frees every component's memory on its simulated device."""
        for component in self._npu_loaded.components:
            component.release()
