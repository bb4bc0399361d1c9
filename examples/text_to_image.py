"""Text to image on the simulated NPU: compile a Diffusers pipeline per component, generate, write a PNG.

    python examples/text_to_image.py                              # a tiny SD pipeline built in code
    python examples/text_to_image.py --model path/to/sd-pipeline --resolution 512x512 --steps 30

Each component (text encoder, UNet, VAE decoder) is its own set of bucket graphs on a device; ``npu_stats``
gives the simulated time of each and of every denoising step, per image, and the memory per device.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from optimum_npu import NPUStableDiffusionPipeline
from optimum_npu.models.diffusion.tiny import build_sd_pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a local Stable Diffusion pipeline folder (default: a tiny one built in code)")
    parser.add_argument("--prompt", default="a red cat")
    parser.add_argument("--resolution", default=None, help="HEIGHTxWIDTH, e.g. 512x512 (default: the model's own)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--guidance-scale", type=float, default=5.0)
    parser.add_argument("--npu", default="atom", help="target device preset (atom, rngd, a100-80gb, h100-sxm...)")
    parser.add_argument("--output", default="image.png", help="the PNG written")
    parser.add_argument("--artifact", help="also save the compiled pipeline here")
    args = parser.parse_args()

    height, width = (int(v) for v in args.resolution.split("x")) if args.resolution else (32, 32)
    npu_config = {"unet": {"resolutions": [[height, width]], "batch_size": 1,
                           "guidance": [args.guidance_scale > 1]}, "npu": args.npu}
    with tempfile.TemporaryDirectory() as work:
        if args.model:
            pipe = NPUStableDiffusionPipeline.from_pretrained(args.model, export=True, npu_config=npu_config)
        else:
            pipe = NPUStableDiffusionPipeline.from_pipeline(build_sd_pipeline(width=2), npu_config, compile_cache=False)
        if args.artifact:
            pipe.save_pretrained(args.artifact)
        pipe.set_progress_bar_config(disable=True)
        image = pipe(args.prompt, height=height, width=width, num_inference_steps=args.steps,
                     guidance_scale=args.guidance_scale, generator=torch.Generator().manual_seed(0)).images[0]
        image.save(args.output)
        print(f"wrote {Path(args.output).resolve()} ({image.width}x{image.height})")
        print(pipe.npu_stats)
        pipe.release()
        del work


if __name__ == "__main__":
    main()
