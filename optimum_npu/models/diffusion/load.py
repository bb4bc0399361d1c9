"""Put a verified pipeline artifact's components on their devices: one ``DeviceEngine`` per component folder.

Classes are taken from closed tables keyed by the (already checked) stored class names; the profiler, when
on, is shared, so every component lands on its own device's track of one trace.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers.configuration_utils import FrozenDict
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKLOutput
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput
from transformers import CLIPTextConfig, CLIPTokenizer, PreTrainedTokenizerFast, T5Config
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPooling
from transformers.models.clip.modeling_clip import CLIPTextModelOutput

from optimum_npu.compile.weights import load_weights, stored_weight_bytes
from optimum_npu.device.device import DeviceRegistry
from optimum_npu.device.engine import DeviceEngine
from optimum_npu.device.profiler import Profiler
from optimum_npu.models.diffusion.modules import NPUAutoencoder, NPUComponent, NPUDenoiser, NPUTextEncoder
from optimum_npu.models.diffusion.stats import DiffusionStats
from optimum_npu.models.diffusion.stored import StoredComponent, StoredPipeline
from optimum_npu.schema import weights_file

#: Text encoders: config class and output class by the stored HF class name.
TEXT_CLASSES = {"CLIPTextModel": (CLIPTextConfig, BaseModelOutputWithPooling),
                "CLIPTextModelWithProjection": (CLIPTextConfig, CLIPTextModelOutput),
                "T5EncoderModel": (T5Config, BaseModelOutput)}
TOKENIZER_CLASSES = {"tokenizer": CLIPTokenizer, "tokenizer_2": CLIPTokenizer, "tokenizer_3": PreTrainedTokenizerFast}
#: Schedulers an artifact may name (host-side, built from their stored config).
SCHEDULERS = {name: getattr(diffusers, name) for name in (
    "DDIMScheduler", "DDPMScheduler", "PNDMScheduler", "LMSDiscreteScheduler", "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler",
    "FlowMatchEulerDiscreteScheduler")}
DENOISER_OUTPUTS = {"unet": UNet2DConditionOutput, "transformer": Transformer2DModelOutput}
VAE_OUTPUTS = {"decoder": DecoderOutput, "encoder": AutoencoderKLOutput, "distribution": DiagonalGaussianDistribution}


@dataclass
class LoadedPipeline:
    """The modules a Diffusers pipeline constructor takes, and what the NPU side keeps."""

    modules: dict[str, Any]
    stats: DiffusionStats
    profiler: Profiler | None
    components: list[NPUComponent]


def load_pipeline(root: Path, facts: StoredPipeline, registry: DeviceRegistry | None) -> LoadedPipeline:
    config = facts.config
    profiler = Profiler() if config.profile else None
    stats, dtype = DiffusionStats(), getattr(torch, config.dtype)
    built: dict[str, NPUComponent] = {}
    try:
        for folder, stored in facts.components.items():
            size = stored.tensor_parallel_size
            devices = config.device_ids("vae" if folder.startswith("vae") else folder, size)
            shard = (lambda rank, f=folder, n=size: Path(root) / f / weights_file(rank, n))
            engine = DeviceEngine(stored.graphs, facts.spec, devices, config.dtype,
                                  weights=lambda rank, s=shard: load_weights(s(rank)),
                                  weight_bytes=lambda rank, s=shard: stored_weight_bytes(s(rank)),
                                  owner=f"{facts.kind}:{folder}", registry=registry, profiler=profiler)
            built[folder] = _component(stored, engine, dtype, stats, devices[0])
            for device in devices:
                stats.memory.setdefault(device, {})[folder] = dict(engine.memory)
    except BaseException:
        for component in built.values():
            component.release()
        raise
    modules: dict[str, Any] = {name: part for name, part in built.items() if not name.startswith("vae")}
    modules["vae"] = NPUAutoencoder(built["vae_decoder"], built.get("vae_encoder"),
                                    FrozenDict(facts.components["vae_decoder"].config), VAE_OUTPUTS)
    for name in facts.tokenizers:
        modules[name] = TOKENIZER_CLASSES[name].from_pretrained(Path(root) / name)
    scheduler_class = SCHEDULERS.get(facts.scheduler.get("_class_name"))
    if scheduler_class is None:
        raise ValueError(f"{root}/scheduler: scheduler {str(facts.scheduler.get('_class_name'))[:80]!r} is not one of "
                         f"{sorted(SCHEDULERS)}; re-download or recompile the pipeline")
    modules["scheduler"] = scheduler_class.from_config(facts.scheduler)
    return LoadedPipeline(modules, stats, profiler, list(built.values()))


def _component(stored: StoredComponent, engine: DeviceEngine, dtype: torch.dtype, stats: DiffusionStats,
               device: int) -> NPUComponent:
    if stored.kind == "text_encoder":
        config_class, output_class = TEXT_CLASSES[stored.class_name]
        config = config_class.from_dict({k: v for k, v in stored.config.items() if not k.startswith("_")})
        return NPUTextEncoder(stored.folder, engine, config, dtype, stats, device, output_class=output_class,
                              class_name=stored.class_name)
    if stored.kind in DENOISER_OUTPUTS:
        return NPUDenoiser(stored.folder, engine, FrozenDict(stored.config), dtype, stats, device,
                           output_class=DENOISER_OUTPUTS[stored.kind])
    return NPUComponent(stored.folder, engine, FrozenDict(stored.config), dtype, stats, device)
