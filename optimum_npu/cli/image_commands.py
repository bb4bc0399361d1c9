"""The ``generate-image`` and ``plan-image`` subcommands (Diffusers pipelines)."""

from __future__ import annotations

import argparse
from pathlib import Path

PLAN_TARGETS = "atom,rngd,a100-80gb,h100-sxm"   # planner/diffusion_plan.PLAN_TARGETS, as a flag value


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
    from optimum_npu.planner.diffusion_plan import diffusion_plan_table

    print(diffusion_plan_table(args.model, tuple(args.npu.split(",")), args.steps, args.resolution, args.batch_size,
                               args.guidance, args.tensor_parallel_size, args.dtype))


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
    plan.add_argument("--tensor-parallel-size", type=int, default=1, help="devices the denoiser (UNet or SD3 transformer) is split on")
    plan.add_argument("--dtype", default="bfloat16")
    plan.set_defaults(func=cmd_plan_image)
