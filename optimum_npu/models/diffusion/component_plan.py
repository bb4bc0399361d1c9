"""The graphs of one component from its module and its own config: what a pipeline and a component compiled
alone both use.

``resolve(kind, module, config)`` fills the defaults a component compiled alone takes from its own HF config
(a pipeline fills them from its other components first) and checks the resolutions against the latent grid;
``plans(folder, kind, module, config)`` gives the component's ``ComponentPlan`` (one per VAE part).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from optimum_npu.device.buckets import Bucket
from optimum_npu.models.diffusion.component_config import (VAE_PARTS, ComponentConfig, NPUDenoiserConfig,
                                                           NPUTextEncoderConfig, NPUVAEConfig, check_multiples)
from optimum_npu.models.diffusion.components import INPUTS, ImageBucket
from optimum_npu.models.diffusion.unet_parallel import check_unet_split

#: Tokens T5 is compiled for in SD3 (its pipeline's ``max_sequence_length`` default), and CLIP's.
T5_TOKENS = 256
CLIP_TOKENS = 77
#: Pixels per latent position of the SD / SDXL / SD3 VAEs (a denoiser compiled alone assumes it by default).
DEFAULT_VAE_SCALE = 8
#: SDXL's time ids (original size, crop, target size); the refiner's aesthetic-score variant has 5.
SDXL_TIME_IDS = 6


@dataclass(frozen=True)
class ComponentPlan:
    """One component folder: the module, its graph kind, input names and buckets with example input shapes."""

    folder: str
    kind: str
    module: Any
    inputs: tuple[str, ...]
    buckets: tuple[tuple[Bucket | ImageBucket, tuple[tuple[int, ...], ...]], ...]
    tensor_parallel_size: int = 1

    def example_args(self, shapes: tuple[tuple[int, ...], ...], dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """Zero inputs of those shapes (token ids int64, the rest in the compute dtype, the timestep in float32), on
        the module's device (``meta`` for a weightless estimate)."""
        device = next(self.module.parameters()).device
        return tuple(torch.zeros(shape, dtype=torch.long if name == "input_ids" else
                                 torch.float32 if name == "timestep" else dtype, device=device)
                     for name, shape in zip(self.inputs, shapes))


def is_sdxl(kind: str, module: Any) -> bool:
    return kind == "unet" and getattr(module.config, "addition_embed_type", None) == "text_time"


def denoiser_downsampling(kind: str, module: Any) -> int:
    """Latent positions per denoiser grid step: the UNet's downsampling, the transformer's patch."""
    return module.config.patch_size if kind == "transformer" else 2 ** (len(module.config.block_out_channels) - 1)


def resolve(kind: str, module: Any, config: ComponentConfig) -> ComponentConfig:
    """``config`` with every default filled from the module's own config, resolutions checked (``kind``: the
    denoiser's, ``unet`` or ``transformer``; the others are told apart by their config class)."""
    if isinstance(config, NPUTextEncoderConfig):
        tokens = T5_TOKENS if type(module).__name__ == "T5EncoderModel" else module.config.max_position_embeddings
        return replace(config, max_length=config.max_length or tokens)
    if isinstance(config, NPUVAEConfig):
        side = module.config.sample_size
        resolutions = config.resolutions or ((side, side),)
        check_multiples(resolutions, 2 ** (len(module.config.block_out_channels) - 1), "the VAE's downsampling")
        return replace(config, resolutions=resolutions)
    scale = config.vae_scale_factor or DEFAULT_VAE_SCALE
    tokens = config.text_tokens or (CLIP_TOKENS + T5_TOKENS if kind == "transformer" else CLIP_TOKENS)
    embeds = None
    if is_sdxl(kind, module):
        embeds = config.text_embeds_dim or (module.config.projection_class_embeddings_input_dim
                                            - SDXL_TIME_IDS * module.config.addition_time_embed_dim)
    side = module.config.sample_size * scale
    resolutions = config.resolutions or ((side, side),)
    check_multiples(resolutions, scale * denoiser_downsampling(kind, module),
                    "the VAE scale factor times the denoiser's downsampling")
    return replace(config, resolutions=resolutions, vae_scale_factor=scale, text_tokens=tokens, text_embeds_dim=embeds)


def plans(folder: str, kind: str, module: Any, config: ComponentConfig) -> list[ComponentPlan]:
    """The plans of one component folder (``config`` resolved): one, or one per VAE part."""
    if isinstance(config, NPUTextEncoderConfig):
        batch, tokens = config.batch_size, config.max_length
        bucket = Bucket(f"text_b{batch}_s{tokens}", "text_encoder", batch, tokens)
        return [ComponentPlan(folder, "text_encoder", module, INPUTS["text_encoder"], ((bucket, ((batch, tokens),)),))]
    if isinstance(config, NPUVAEConfig):
        return [_vae_plan(folder, VAE_PARTS[part], module, config) for part in config.parts]
    return [_denoiser_plan(folder, kind, module, config)]


def _vae_plan(folder: str, kind: str, vae: Any, config: NPUVAEConfig) -> ComponentPlan:
    batch, scale = config.batch_size, 2 ** (len(vae.config.block_out_channels) - 1)
    buckets = []
    for height, width in config.resolutions:
        latent = (batch, vae.config.latent_channels, height // scale, width // scale)
        shape = latent if kind == "vae_decoder" else (batch, vae.config.in_channels, height, width)
        buckets.append((ImageBucket(f"{kind}_b{batch}_h{height}_w{width}", kind, batch, height, width,
                                    latent[2] * latent[3]), (shape,)))
    return ComponentPlan(folder, kind, vae, INPUTS[kind], tuple(buckets))


def _denoiser_plan(folder: str, kind: str, denoiser: Any, config: NPUDenoiserConfig) -> ComponentPlan:
    sdxl = is_sdxl(kind, denoiser)
    inputs = INPUTS["unet_sdxl" if sdxl else kind]
    context = denoiser.config.cross_attention_dim if kind == "unet" else denoiser.config.joint_attention_dim
    scale, channels = config.vae_scale_factor, denoiser.config.in_channels
    buckets = []
    for height, width in config.resolutions:
        for guided in config.guidance:
            rows = config.batch_size * (2 if guided else 1)
            latent = (rows, channels, height // scale, width // scale)
            shapes = [latent, (rows,), (rows, config.text_tokens, context)]
            if sdxl:   # time ids: 6 (sizes, crop) or 5 (aesthetic score)
                pooled = config.text_embeds_dim
                times = (denoiser.config.projection_class_embeddings_input_dim - pooled) // \
                    denoiser.config.addition_time_embed_dim
                shapes += [(rows, pooled), (rows, times)]
            if kind == "transformer":
                shapes.append((rows, denoiser.config.pooled_projection_dim))
            bucket = ImageBucket(f"{kind}_b{rows}_h{height}_w{width}", kind, rows, height, width, latent[2] * latent[3])
            buckets.append((bucket, tuple(shapes)))
    if kind == "unet":   # refused before capture when the groups / heads do not divide (``unet_parallel``)
        check_unet_split(denoiser, config.tensor_parallel_size)
    return ComponentPlan(folder, kind, denoiser, inputs, tuple(buckets), config.tensor_parallel_size)
