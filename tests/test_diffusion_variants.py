"""SDXL and the image-to-image / inpainting variants against eager Diffusers (tiny pipelines built in code, fp32).

Each case compiles its own pipeline (one resolution, batch 2, guidance), so they are in the slow tier; the
quick tier's Stable Diffusion cases are in ``test_diffusion.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from optimum_npu import (NPUStableDiffusionImg2ImgPipeline, NPUStableDiffusionInpaintPipeline,
                         NPUStableDiffusionXLImg2ImgPipeline, NPUStableDiffusionXLInpaintPipeline,
                         NPUStableDiffusionXLPipeline)
from optimum_npu.models.diffusion.tiny import build_sd_pipeline, build_sdxl_pipeline

CONFIG = {"unet": {"resolutions": [[32, 32]], "batch_size": 2, "guidance": [True]}}
IMAGE = Image.fromarray((np.random.RandomState(0).rand(32, 32, 3) * 255).astype(np.uint8))
MASK = Image.fromarray(((np.arange(32)[None, :] >= 16) * np.ones((32, 1)) * 255).astype(np.uint8))
CASES = [
    (NPUStableDiffusionXLPipeline, lambda: build_sdxl_pipeline(), {"height": 32, "width": 32}, "unet"),
    (NPUStableDiffusionImg2ImgPipeline, lambda: build_sd_pipeline("image2image"), {"image": [IMAGE, IMAGE],
                                                                                  "strength": 0.6}, "vae_encoder"),
    (NPUStableDiffusionInpaintPipeline, lambda: build_sd_pipeline("inpainting"),
     {"image": IMAGE, "mask_image": MASK, "height": 32, "width": 32}, "vae_encoder"),
    (NPUStableDiffusionXLImg2ImgPipeline, lambda: build_sdxl_pipeline("image2image"),
     {"image": [IMAGE, IMAGE], "strength": 0.6}, "vae_encoder"),
    (NPUStableDiffusionXLInpaintPipeline, lambda: build_sdxl_pipeline("inpainting"),
     {"image": IMAGE, "mask_image": MASK, "height": 32, "width": 32, "strength": 0.8}, "vae_encoder"),
]


@pytest.mark.slow
@pytest.mark.parametrize("npu_class,build,kwargs,component", CASES, ids=lambda c: getattr(c, "__name__", None))
def test_variant_images_equal_eager_diffusers(npu_class, build, kwargs, component, tmp_path):
    eager = build()
    eager.set_progress_bar_config(disable=True)
    compiled = npu_class.from_pipeline(eager, CONFIG, compile_cache=False)
    compiled.save_pretrained(tmp_path / "npu")
    compiled.release()
    npu = npu_class.from_pretrained(tmp_path / "npu")
    npu.set_progress_bar_config(disable=True)
    try:
        call = dict(prompt=["a red cat", "a blue dog"], num_inference_steps=4, guidance_scale=5.0, output_type="np",
                    **kwargs)
        reference = eager(generator=torch.Generator().manual_seed(0), **call).images
        images = npu(generator=torch.Generator().manual_seed(0), **call).images
        assert images.shape == (2, 32, 32, 3)
        assert np.abs(images - reference).max() < 1e-4
        assert component in npu.npu_stats.seconds_by_component   # the VAE encoder ran on the device when needed
    finally:
        npu.release()
