"""The ``generate-image`` and ``plan-image`` subcommands (Diffusers pipelines)."""

from __future__ import annotations

import argparse
from pathlib import Path

PLAN_TARGETS = "atom,rngd,a100-80gb,h100-sxm"


def _resolution(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH like 1024x1024, got {text!r}") from None
    return height, width


def cmd_generate_image(args: argparse.Namespace) -> None:
    import torch

    from optimum_npu.models.auto import family_of

    path, family = family_of(args.model, {})
    if family is None or family.name != "diffusion":
        raise ValueError(f"{args.model} is not a compiled Diffusers pipeline; compile one with `optimum-npu export "
                         "PIPELINE_DIR OUT` and pass OUT")
    placement = family.placement(args.device, args.trace is not None)
    pipe = family.model_class.from_pretrained(path, npu_config=placement)
    pipe.set_progress_bar_config(disable=True)
    kwargs = {"height": args.height, "width": args.width} if args.height else {}
    image = pipe(args.prompt, negative_prompt=args.negative_prompt, num_inference_steps=args.steps,
                 guidance_scale=args.guidance_scale, generator=torch.Generator().manual_seed(args.seed),
                 **kwargs).images[0]
    image.save(args.output)
    print(f"wrote {args.output} ({image.width}x{image.height})")
    print(pipe.npu_stats)
    if args.trace is not None:
        pipe.npu_profile.save(args.trace)
        print(f"wrote the profiler trace {args.trace} (open it in https://ui.perfetto.dev)")
    pipe.release()


def cmd_plan_image(args: argparse.Namespace) -> None:
    from optimum_npu.device.spec import resolve_spec
    from optimum_npu.models.diffusion.estimate import estimate_pipeline
    from optimum_npu.models.diffusion.npu_config import NPUDiffusionConfig
    from optimum_npu.models.diffusion.real_shapes import PRESETS, meta_pipeline, preset_pipeline

    if args.model in PRESETS:
        pipe, native = preset_pipeline(args.model)
    else:
        pipe, native = meta_pipeline(args.model), None
    resolution = args.resolution or native
    if resolution is None:
        raise ValueError("--resolution HEIGHTxWIDTH is needed for a Diffusers folder")
    denoiser = "transformer" if getattr(pipe, "transformer", None) is not None else "unet"
    config = NPUDiffusionConfig.coerce({denoiser: {"resolutions": [list(resolution)], "batch_size": args.batch_size,
                                                   "guidance": [args.guidance],
                                                   "tensor_parallel_size": args.tensor_parallel_size},
                                        "dtype": args.dtype})
    estimates = estimate_pipeline(pipe, config, args.steps, npus=tuple(args.npu.split(",")))
    print(f"{args.model} at {resolution[0]}x{resolution[1]}, {args.steps} steps, "
          f"{'with' if args.guidance else 'without'} guidance, batch {args.batch_size}, {args.dtype} "
          "(weightless estimate, components on device 0, the denoiser on devices 0..tp-1)")
    print(f"{'npu':<12}{'s / image':>11}{'denoiser/step ms':>18}{'text enc. ms':>14}{'VAE ms':>9}  memory per device")
    for estimate in estimates:
        seconds = estimate.seconds_by_component
        step = seconds[denoiser] / args.steps * 1e3
        text = sum(v for k, v in seconds.items() if k.startswith("text_encoder")) * 1e3
        capacity = resolve_spec(estimate.npu).dram_bytes
        memory = ", ".join(f"npu:{d} {b / 1e9:.2f} GB" + (f" (over its {capacity / 1e9:.0f} GB)" if b > capacity else "")
                           for d, b in sorted(estimate.memory_per_device({}).items()))
        print(f"{estimate.npu:<12}{estimate.seconds_per_image:>11.4g}{step:>18.2f}{text:>14.2f}"
              f"{seconds['vae_decoder'] * 1e3:>9.2f}  {memory}")


def add_image_commands(commands: argparse._SubParsersAction) -> None:
    """Adds ``generate-image`` and ``plan-image`` to the CLI's subcommands."""
    generate = commands.add_parser("generate-image", help="generate an image with a compiled Diffusers pipeline",
                                   description="Load a compiled pipeline, generate one image, write a PNG and print "
                                               "the simulated figures per component and per denoising step.")
    generate.add_argument("model", help="compiled pipeline directory")
    generate.add_argument("--prompt", default="an astronaut riding a horse")
    generate.add_argument("--negative-prompt")
    generate.add_argument("--height", type=int, help="image height (default: the pipeline's own)")
    generate.add_argument("--width", type=int, help="image width (default: the pipeline's own)")
    generate.add_argument("--steps", type=int, default=30, help="denoising steps (default 30)")
    generate.add_argument("--guidance-scale", type=float, default=7.5)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--device", type=int, default=0, help="simulated device id for every component")
    generate.add_argument("--output", type=Path, default=Path("image.png"), help="the PNG to write")
    generate.add_argument("--trace", type=Path, help="also write a profiler trace (Perfetto JSON) here")
    generate.set_defaults(func=cmd_generate_image)

    plan = commands.add_parser("plan-image", help="estimate seconds per image and memory of a Diffusers pipeline",
                               description="Capture a pipeline's components weightless (meta) at their real shapes "
                                           "and estimate seconds per image and memory per device on each target.")
    plan.add_argument("model", help="a preset (sd15, sdxl, sd3-medium) or a Diffusers folder (configs only are read)")
    plan.add_argument("--npu", default=PLAN_TARGETS, help=f"comma-separated targets (default {PLAN_TARGETS})")
    plan.add_argument("--resolution", type=_resolution, help="HEIGHTxWIDTH (default: the preset's own)")
    plan.add_argument("--steps", type=int, default=50)
    plan.add_argument("--batch-size", type=int, default=1, help="images per call")
    plan.add_argument("--no-guidance", dest="guidance", action="store_false", help="guidance_scale <= 1")
    plan.add_argument("--tensor-parallel-size", type=int, default=1, help="devices the SD3 transformer is split on")
    plan.add_argument("--dtype", default="bfloat16")
    plan.set_defaults(func=cmd_plan_image)
