"""Which graphs a pipeline compiles: one folder per component, one graph per bucket, and each graph's inputs.

``component_plans(pipe, config, with_vae_encoder)`` reads the eager Diffusers pipeline once (its modules'
configs and tokenizers) and returns, per component folder, the module to capture and its buckets with
example input shapes:

- text encoders: ``batch_size`` prompts x the tokenizer's ``model_max_length`` tokens;
- the denoiser: one graph per (resolution, guidance mode), ``batch_size`` or twice that rows;
- the VAE decoder (and the encoder when a variant needs it): one graph per resolution, ``batch_size`` rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from optimum_npu.device.buckets import Bucket
from optimum_npu.models.diffusion.components import INPUTS, ImageBucket
from optimum_npu.models.diffusion.npu_config import NPUDiffusionConfig
from optimum_npu.models.diffusion.unet_parallel import check_unet_split

#: Text-encoder attributes of a pipeline, in order, and the tokenizer each uses.
TEXT_ENCODERS = (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2"), ("text_encoder_3", "tokenizer_3"))
#: Tokens T5 is compiled for in SD3 (its pipeline's ``max_sequence_length`` default).
T5_TOKENS = 256


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


def vae_scale_factor(pipe: Any) -> int:
    return 2 ** (len(pipe.vae.config.block_out_channels) - 1)


def denoiser_name(pipe: Any) -> str:
    return "transformer" if getattr(pipe, "transformer", None) is not None else "unet"


def latent_multiple(pipe: Any) -> int:
    """Pixels a resolution must be a multiple of: the VAE scale times the denoiser's downsampling (or patch)."""
    denoiser = getattr(pipe, denoiser_name(pipe))
    if denoiser_name(pipe) == "transformer":
        return vae_scale_factor(pipe) * denoiser.config.patch_size
    return vae_scale_factor(pipe) * 2 ** (len(denoiser.config.block_out_channels) - 1)


def default_resolution(pipe: Any) -> tuple[int, int]:
    side = getattr(pipe, denoiser_name(pipe)).config.sample_size * vae_scale_factor(pipe)
    return side, side


def text_tokens(pipe: Any, tokenizer_attr: str) -> int:
    return T5_TOKENS if tokenizer_attr == "tokenizer_3" else int(getattr(pipe, tokenizer_attr).model_max_length)


def component_plans(pipe: Any, config: NPUDiffusionConfig, with_vae_encoder: bool) -> list[ComponentPlan]:
    """The component folders of ``pipe`` compiled with ``config`` (resolved)."""
    batch, plans = config.batch_size, []
    embed_dims = []
    for attr, tokenizer in TEXT_ENCODERS:
        encoder = getattr(pipe, attr, None)
        if encoder is None:
            continue
        tokens = text_tokens(pipe, tokenizer)
        bucket = Bucket(f"text_b{batch}_s{tokens}", "text_encoder", batch, tokens)
        plans.append(ComponentPlan(attr, "text_encoder", encoder, INPUTS["text_encoder"],
                                   ((bucket, ((batch, tokens),)),)))
        embed_dims.append(encoder.config.hidden_size if hasattr(encoder.config, "hidden_size") else encoder.config.d_model)
    name = denoiser_name(pipe)
    denoiser, scale = getattr(pipe, name), vae_scale_factor(pipe)
    channels = denoiser.config.in_channels
    plans.append(_denoiser_plan(pipe, name, denoiser, config, scale, channels))
    vae_channels = pipe.vae.config.latent_channels
    for kind in ("vae_decoder",) + (("vae_encoder",) if with_vae_encoder else ()):
        buckets = []
        for height, width in config.resolutions:
            latent = (batch, vae_channels, height // scale, width // scale)
            shape = latent if kind == "vae_decoder" else (batch, pipe.vae.config.in_channels, height, width)
            buckets.append((ImageBucket(f"{kind}_b{batch}_h{height}_w{width}", kind, batch, height, width,
                                        latent[2] * latent[3]), (shape,)))
        plans.append(ComponentPlan(kind, kind, pipe.vae, INPUTS[kind], tuple(buckets)))
    return plans


def _denoiser_plan(pipe: Any, name: str, denoiser: Any, config: NPUDiffusionConfig, scale: int,
                   channels: int) -> ComponentPlan:
    sdxl = name == "unet" and getattr(denoiser.config, "addition_embed_type", None) == "text_time"
    inputs = INPUTS["unet_sdxl" if sdxl else name]
    tokens = _context_tokens(pipe)
    context = denoiser.config.cross_attention_dim if name == "unet" else denoiser.config.joint_attention_dim
    buckets = []
    for height, width in config.resolutions:
        for guided in config.guidance:
            rows = config.batch_size * (2 if guided else 1)
            latent = (rows, channels, height // scale, width // scale)
            shapes = [latent, (rows,), (rows, tokens, context)]
            if sdxl:
                pooled = pipe.text_encoder_2.config.projection_dim   # time ids: 6 (sizes, crop) or 5 (aesthetic score)
                times = (denoiser.config.projection_class_embeddings_input_dim - pooled) // \
                    denoiser.config.addition_time_embed_dim
                shapes += [(rows, pooled), (rows, times)]
            if name == "transformer":
                shapes.append((rows, denoiser.config.pooled_projection_dim))
            bucket = ImageBucket(f"{name}_b{rows}_h{height}_w{width}", name, rows, height, width, latent[2] * latent[3])
            buckets.append((bucket, tuple(shapes)))
    if name == "unet":   # refused before capture when the groups / heads do not divide (``unet_parallel``)
        check_unet_split(denoiser, config.tensor_parallel_size)
    return ComponentPlan(name, name, denoiser, inputs, tuple(buckets), config.tensor_parallel_size)


def _context_tokens(pipe: Any) -> int:
    """Text positions the denoiser attends to: the CLIP tokens (SD3: CLIP tokens + T5 tokens)."""
    clip = text_tokens(pipe, "tokenizer")
    return clip + T5_TOKENS if getattr(pipe, "text_encoder_3", None) is not None else clip
