"""Diffusers pipelines: host wall time of the NPU pipeline vs eager Diffusers, and the planner at real shapes.

Part 1, side by side in one run on the same tiny-but-not-trivial Stable Diffusion pipeline (UNet channels 32/64,
CLIP width 256, 64x64 images, batch 2, guidance): host wall seconds per call of eager Diffusers and of the
compiled pipeline (graphs interpreted on the simulated device, cost accounting included), their ratio, the
largest pixel difference, and the simulated seconds the NPU pipeline reports.

Part 2: the weightless estimate (``optimum-npu plan-image``) of seconds per image for SD 1.5 at 512x512,
SDXL at 1024x1024 and SD3-medium at 1024x1024, 50 steps with guidance, batch 1, bfloat16, on each preset.

    python bench/bench_diffusion.py [--steps 4] [--repeats 2] [--skip-real]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from optimum_npu import NPUStableDiffusionPipeline
from optimum_npu.models.diffusion.estimate import estimate_pipeline
from optimum_npu.models.diffusion.npu_config import NPUDiffusionConfig
from optimum_npu.models.diffusion.real_shapes import PRESETS, preset_pipeline
from optimum_npu.models.diffusion.tiny import build_sd_pipeline

TARGETS = ("atom", "rngd", "a100-80gb", "h100-sxm")


def _timed(pipe, call: dict, repeats: int) -> tuple[float, np.ndarray]:
    best, images = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        images = pipe(generator=torch.Generator().manual_seed(0), **call).images
        best = min(best, time.perf_counter() - start)
    return best, images


def host_wall_time(steps: int, repeats: int) -> None:
    eager = build_sd_pipeline(width=8, tokens=16)
    eager.set_progress_bar_config(disable=True)
    npu = NPUStableDiffusionPipeline.from_pipeline(eager, {"unet": {"resolutions": [[64, 64]], "batch_size": 2}},
                                                   compile_cache=False)
    npu.set_progress_bar_config(disable=True)
    call = dict(prompt=["a red cat", "a blue dog"], height=64, width=64, num_inference_steps=steps,
                guidance_scale=5.0, output_type="np")
    with torch.no_grad():
        eager_s, reference = _timed(eager, call, repeats)
    npu.npu_stats.reset()
    npu_s, images = _timed(npu, call, repeats)
    simulated = npu.npu_stats.seconds / repeats
    print(f"tiny SD (UNet 32/64 ch, 64x64, batch 2, {steps} steps, guidance), best of {repeats}:")
    print(f"  eager Diffusers host wall {eager_s:.3f} s | NPU pipeline host wall {npu_s:.3f} s "
          f"(ratio {npu_s / eager_s:.2f}x) | max |diff| {np.abs(images - reference).max():.2e} | "
          f"simulated on {npu.npu_config.npu} {simulated * 1e3:.3f} ms per call")
    npu.release()


def real_shapes(steps: int) -> None:
    print(f"\nweightless estimates, {steps} steps, guidance, batch 1, bfloat16 (seconds per image):")
    print(f"{'pipeline':<12}{'resolution':>12}" + "".join(f"{t:>12}" for t in TARGETS) + "   weights+workspace")
    for name in PRESETS:
        pipe, resolution = preset_pipeline(name)
        denoiser = "transformer" if hasattr(pipe, "transformer") else "unet"
        config = NPUDiffusionConfig.coerce({denoiser: {"resolutions": [list(resolution)]}, "dtype": "bfloat16"})
        estimates = estimate_pipeline(pipe, config, steps, npus=TARGETS)
        memory = sum(estimates[0].memory_per_device({}).values()) / 1e9
        print(f"{name:<12}{f'{resolution[0]}x{resolution[1]}':>12}"
              + "".join(f"{e.seconds_per_image:>12.3f}" for e in estimates) + f"   {memory:.2f} GB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="denoising steps of the tiny pipeline (default 4)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--real-steps", type=int, default=50)
    parser.add_argument("--skip-real", action="store_true", help="skip the real-shape estimates (minutes of capture)")
    args = parser.parse_args()
    host_wall_time(args.steps, args.repeats)
    if not args.skip_real:
        real_shapes(args.real_steps)


if __name__ == "__main__":
    main()
