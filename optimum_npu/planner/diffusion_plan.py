"""Capacity planning for Diffusers pipelines: seconds per image and memory per device, from weightless captures.

``optimum-npu plan`` and ``optimum-npu plan-image`` both print ``diffusion_plan_table``; the estimate itself is
the diffusion family's (``models/diffusion/estimate.py``, real component shapes on the meta device).
"""

from __future__ import annotations

from pathlib import Path

#: Targets a pipeline plan compares when none are named.
PLAN_TARGETS = ("atom", "rngd", "a100-80gb", "h100-sxm")


def is_diffusion_model(model: str) -> bool:
    """Whether ``model`` names a built-in pipeline shape (sd15, sdxl, sd3-medium) or a Diffusers folder."""
    from optimum_npu.models.diffusion.real_shapes import PRESETS

    return model in PRESETS or (Path(model) / "model_index.json").is_file()


def diffusion_plan_table(model: str, npus: tuple[str, ...] = PLAN_TARGETS, steps: int = 50,
                         resolution: tuple[int, int] | None = None, batch_size: int = 1, guidance: bool = True,
                         tensor_parallel_size: int = 1, dtype: str = "bfloat16") -> str:
    """The plan of a pipeline as text: one row per target (seconds per image, the denoiser per step, text
    encoders, VAE, memory per device, flagged when over the device's capacity)."""
    from optimum_npu.device.spec import resolve_spec
    from optimum_npu.models.diffusion.estimate import estimate_pipeline
    from optimum_npu.models.diffusion.npu_config import NPUDiffusionConfig
    from optimum_npu.models.diffusion.real_shapes import PRESETS, meta_pipeline, preset_pipeline

    if model in PRESETS:
        pipe, native = preset_pipeline(model)
    else:
        pipe, native = meta_pipeline(model), None
    denoiser = "transformer" if getattr(pipe, "transformer", None) is not None else "unet"
    resolution = resolution or native or _native_resolution(pipe, denoiser)
    config = NPUDiffusionConfig.coerce({denoiser: {"resolutions": [list(resolution)], "batch_size": batch_size,
                                                   "guidance": [guidance],
                                                   "tensor_parallel_size": tensor_parallel_size},
                                        "dtype": dtype})
    estimates = estimate_pipeline(pipe, config, steps, npus=tuple(npus))
    lines = [f"{model} at {resolution[0]}x{resolution[1]}, {steps} steps, {'with' if guidance else 'without'} "
             f"guidance, batch {batch_size}, {dtype} (weightless estimate, components on device 0, the denoiser on "
             "devices 0..tp-1)",
             f"{'npu':<12}{'s / image':>11}{'denoiser/step ms':>18}{'text enc. ms':>14}{'VAE ms':>9}  memory per device"]
    for estimate in estimates:
        seconds = estimate.seconds_by_component
        step = seconds[denoiser] / steps * 1e3
        text = sum(v for k, v in seconds.items() if k.startswith("text_encoder")) * 1e3
        capacity = resolve_spec(estimate.npu).dram_bytes
        memory = ", ".join(f"npu:{d} {b / 1e9:.2f} GB" + (f" (over its {capacity / 1e9:.0f} GB)" if b > capacity else "")
                           for d, b in sorted(estimate.memory_per_device({}).items()))
        lines.append(f"{estimate.npu:<12}{estimate.seconds_per_image:>11.4g}{step:>18.2f}{text:>14.2f}"
                     f"{seconds['vae_decoder'] * 1e3:>9.2f}  {memory}")
    return "\n".join(lines)


def _native_resolution(pipe, denoiser: str) -> tuple[int, int]:
    """The size a Diffusers pipeline generates by default: the denoiser's latent ``sample_size`` times the VAE's
    downsampling (``2 ** (len(block_out_channels) - 1)``), as Diffusers' pipelines compute it."""
    sample = getattr(getattr(pipe, denoiser).config, "sample_size", None)
    if not isinstance(sample, int) or sample < 1:
        raise ValueError(f"the {denoiser}'s config has no sample_size; give --resolution HEIGHTxWIDTH (e.g. 1024x1024)")
    side = sample * 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    return side, side
