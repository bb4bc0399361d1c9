"""Which graphs a pipeline compiles: one folder per component, one graph per bucket, and each graph's inputs.

``component_plans(pipe, config, with_vae_encoder)`` reads the eager Diffusers pipeline once (its modules'
configs and tokenizers) and returns, per component folder, the module to capture and its buckets with
example input shapes:

- text encoders: ``batch_size`` prompts x the tokenizer's ``model_max_length`` tokens;
- the denoiser: one graph per (resolution, guidance mode), ``batch_size`` or twice that rows;
- the VAE decoder (and the encoder when a variant needs it): one graph per resolution, ``batch_size`` rows.

Each folder is planned from its own component config (``folder_configs``: the pipeline config's share, plus
what the pipeline derives: the VAE scale, the text lengths, SDXL's pooled size) by ``component_plan.py``, the
same code that plans a component compiled alone.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from optimum_npu.models.diffusion.component_config import ComponentConfig
from optimum_npu.models.diffusion.component_plan import T5_TOKENS, ComponentPlan, is_sdxl, plans, resolve
from optimum_npu.models.diffusion.npu_config import NPUDiffusionConfig

__all__ = ["T5_TOKENS", "ComponentPlan", "component_plans", "folder_configs"]

#: Text-encoder attributes of a pipeline, in order, and the tokenizer each uses.
TEXT_ENCODERS = (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2"), ("text_encoder_3", "tokenizer_3"))


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


def folder_configs(pipe: Any, config: NPUDiffusionConfig, with_vae_encoder: bool) -> dict[str, ComponentConfig]:
    """The resolved config of each component folder of ``pipe`` compiled with ``config`` (resolved)."""
    configs: dict[str, ComponentConfig] = {}
    for attr, tokenizer in TEXT_ENCODERS:
        if getattr(pipe, attr, None) is not None:
            configs[attr] = replace(config.component_config(attr), max_length=text_tokens(pipe, tokenizer))
    name = denoiser_name(pipe)
    denoiser = getattr(pipe, name)
    derived = {"vae_scale_factor": vae_scale_factor(pipe), "text_tokens": _context_tokens(pipe),
               "text_embeds_dim": pipe.text_encoder_2.config.projection_dim if is_sdxl(name, denoiser) else None}
    configs[name] = resolve(name, denoiser, replace(config.component_config(name), **derived))
    for folder in ("vae_decoder",) + (("vae_encoder",) if with_vae_encoder else ()):
        configs[folder] = config.component_config(folder)
    return configs


def folder_plans(pipe: Any, config: NPUDiffusionConfig,
                 with_vae_encoder: bool) -> dict[str, tuple[ComponentConfig, list[ComponentPlan]]]:
    """Each component folder's resolved config and plans."""
    result = {}
    for folder, folder_config in folder_configs(pipe, config, with_vae_encoder).items():
        kind = "text_encoder" if folder.startswith("text_encoder") else folder
        module = pipe.vae if folder.startswith("vae") else getattr(pipe, folder)
        result[folder] = (folder_config, plans(folder, kind, module, folder_config))
    return result


def component_plans(pipe: Any, config: NPUDiffusionConfig, with_vae_encoder: bool) -> list[ComponentPlan]:
    """The plans of every component folder of ``pipe`` compiled with ``config`` (resolved), in order."""
    return [plan for _, folder in folder_plans(pipe, config, with_vae_encoder).values() for plan in folder]


def _context_tokens(pipe: Any) -> int:
    """Text positions the denoiser attends to: the CLIP tokens (SD3: CLIP tokens + T5 tokens)."""
    clip = text_tokens(pipe, "tokenizer")
    return clip + T5_TOKENS if getattr(pipe, "text_encoder_3", None) is not None else clip
