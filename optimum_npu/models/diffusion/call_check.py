"""A pipeline call checked against the compiled buckets before any compute.

The resolution (``height`` / ``width``, or the input image's size for img2img), the images per call
(prompts x ``num_images_per_prompt``) and the guidance mode (``guidance_scale > 1``) must each match what
was compiled; a mismatch is refused with the compiled buckets and the fix, never silently resized.
"""

from __future__ import annotations

import inspect
from typing import Any

from optimum_npu.models.diffusion.npu_config import NPUDiffusionConfig
from optimum_npu.models.diffusion.plan import T5_TOKENS


class NotCompiledError(ValueError):
    """A pipeline call that no compiled bucket serves."""


def _rows(arguments: dict[str, Any]) -> int:
    prompt = arguments.get("prompt")
    if isinstance(prompt, str):
        count = 1
    elif isinstance(prompt, list):
        count = len(prompt)
    elif arguments.get("prompt_embeds") is not None:
        count = arguments["prompt_embeds"].shape[0]
    else:
        count = 1
    return count * (arguments.get("num_images_per_prompt") or 1)


def _resolution(pipe: Any, arguments: dict[str, Any]) -> tuple[int, int]:
    height, width = arguments.get("height"), arguments.get("width")
    image = arguments.get("image")
    if image is not None and "height" not in inspect.signature(pipe.eager_class.__call__).parameters:   # img2img
        return tuple(pipe.image_processor.get_default_height_width(image[0] if isinstance(image, list) else image))
    if image is not None and (height is None or width is None):
        h, w = pipe.image_processor.get_default_height_width(image[0] if isinstance(image, list) else image)
        return height or h, width or w
    denoiser = pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer
    side = denoiser.config.sample_size * pipe.vae_scale_factor
    return height or side, width or side


def check_call(pipe: Any, config: NPUDiffusionConfig, arguments: dict[str, Any]) -> int:
    """Raises ``NotCompiledError`` unless a compiled bucket serves the call; returns its images."""
    if arguments.get("clip_skip") is not None:
        raise NotCompiledError(f"clip_skip={arguments['clip_skip']} is not compiled: the text encoders return their "
                               "last and penultimate layers only; leave clip_skip out")
    if getattr(pipe, "text_encoder_3", None) is not None and arguments.get("max_sequence_length", T5_TOKENS) != T5_TOKENS:
        raise NotCompiledError(f"max_sequence_length={arguments['max_sequence_length']} is not compiled: the T5 "
                               f"encoder and the transformer take {T5_TOKENS} T5 tokens; leave it at {T5_TOKENS}")
    rows, (height, width) = _rows(arguments), _resolution(pipe, arguments)
    compiled = [list(r) for r in config.resolutions]
    if [height, width] not in compiled:
        raise NotCompiledError(f"height={height}, width={width} is not compiled (resolutions={compiled}); pass one "
                               f"of those, or add [{height}, {width}] to resolutions and recompile (a call is never "
                               "resized)")
    if rows > config.batch_size:
        raise NotCompiledError(f"the call makes {rows} images (prompts x num_images_per_prompt) but batch_size="
                               f"{config.batch_size} was compiled; make at most {config.batch_size} per call, or "
                               f"recompile with batch_size={rows}")
    scale = arguments.get("guidance_scale")
    scale = scale if scale is not None else _default_guidance(pipe)
    cond_dim = getattr(getattr(pipe, "unet", None), "config", {}).get("time_cond_proj_dim") \
        if getattr(pipe, "unet", None) is not None else None
    guided = scale > 1 and cond_dim is None
    if guided not in config.guidance:
        mode = "with" if guided else "without"
        raise NotCompiledError(f"guidance_scale={scale} runs {mode} classifier-free guidance, which is not compiled "
                               f"(guidance={list(config.guidance)}); use a guidance_scale "
                               f"{'<= 1' if guided else '> 1'}, or recompile with guidance={sorted({guided, *config.guidance}, reverse=True)}")
    return rows


def _default_guidance(pipe: Any) -> float:
    return inspect.signature(pipe.eager_class.__call__).parameters["guidance_scale"].default
