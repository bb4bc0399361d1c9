"""The compiled pipeline classes: each is Diffusers' own pipeline class with ``NPUDiffusionMixin`` first.

| class | Diffusers class | kind (artifact) | VAE encoder |
|---|---|---|---|
| ``NPUStableDiffusionPipeline`` | StableDiffusionPipeline | StableDiffusionPipeline | no |
| ``NPUStableDiffusionImg2ImgPipeline`` | StableDiffusionImg2ImgPipeline | StableDiffusionPipeline | yes |
| ``NPUStableDiffusionInpaintPipeline`` | StableDiffusionInpaintPipeline | StableDiffusionPipeline | yes |
| ``NPUStableDiffusionXLPipeline`` (+ Img2Img, Inpaint) | StableDiffusionXL* | StableDiffusionXLPipeline | variants |
| ``NPUStableDiffusion3Pipeline`` (+ Img2Img, Inpaint) | StableDiffusion3* | StableDiffusion3Pipeline | variants |
"""

from __future__ import annotations

from diffusers import (StableDiffusion3Img2ImgPipeline, StableDiffusion3InpaintPipeline, StableDiffusion3Pipeline,
                       StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline, StableDiffusionPipeline,
                       StableDiffusionXLImg2ImgPipeline, StableDiffusionXLInpaintPipeline, StableDiffusionXLPipeline)

from optimum_npu.models.diffusion.pipeline_base import NPUDiffusionMixin

SD, SDXL, SD3 = "StableDiffusionPipeline", "StableDiffusionXLPipeline", "StableDiffusion3Pipeline"


class NPUStableDiffusionPipeline(NPUDiffusionMixin, StableDiffusionPipeline):
    """Stable Diffusion 1.x / 2.x text-to-image on the simulated NPU."""

    eager_class, pipeline_kind = StableDiffusionPipeline, SD


class NPUStableDiffusionImg2ImgPipeline(NPUDiffusionMixin, StableDiffusionImg2ImgPipeline):
    """Stable Diffusion image-to-image (the VAE encoder compiled too)."""

    eager_class, pipeline_kind, needs_vae_encoder = StableDiffusionImg2ImgPipeline, SD, True


class NPUStableDiffusionInpaintPipeline(NPUDiffusionMixin, StableDiffusionInpaintPipeline):
    """Stable Diffusion inpainting (the VAE encoder compiled too)."""

    eager_class, pipeline_kind, needs_vae_encoder = StableDiffusionInpaintPipeline, SD, True


class NPUStableDiffusionXLPipeline(NPUDiffusionMixin, StableDiffusionXLPipeline):
    """SDXL text-to-image (two CLIP text encoders)."""

    eager_class, pipeline_kind = StableDiffusionXLPipeline, SDXL


class NPUStableDiffusionXLImg2ImgPipeline(NPUDiffusionMixin, StableDiffusionXLImg2ImgPipeline):
    """SDXL image-to-image."""

    eager_class, pipeline_kind, needs_vae_encoder = StableDiffusionXLImg2ImgPipeline, SDXL, True


class NPUStableDiffusionXLInpaintPipeline(NPUDiffusionMixin, StableDiffusionXLInpaintPipeline):
    """SDXL inpainting."""

    eager_class, pipeline_kind, needs_vae_encoder = StableDiffusionXLInpaintPipeline, SDXL, True


class NPUStableDiffusion3Pipeline(NPUDiffusionMixin, StableDiffusion3Pipeline):
    """Stable Diffusion 3 text-to-image (SD3 transformer, two CLIP encoders and T5)."""

    eager_class, pipeline_kind = StableDiffusion3Pipeline, SD3


class NPUStableDiffusion3Img2ImgPipeline(NPUDiffusionMixin, StableDiffusion3Img2ImgPipeline):
    """Stable Diffusion 3 image-to-image."""

    eager_class, pipeline_kind, needs_vae_encoder = StableDiffusion3Img2ImgPipeline, SD3, True


class NPUStableDiffusion3InpaintPipeline(NPUDiffusionMixin, StableDiffusion3InpaintPipeline):
    """Stable Diffusion 3 inpainting."""

    eager_class, pipeline_kind, needs_vae_encoder = StableDiffusion3InpaintPipeline, SD3, True


#: The class of each (kind, task): what the auto classes dispatch to.
PIPELINES = {
    (SD, "text2image"): NPUStableDiffusionPipeline, (SD, "image2image"): NPUStableDiffusionImg2ImgPipeline,
    (SD, "inpainting"): NPUStableDiffusionInpaintPipeline, (SDXL, "text2image"): NPUStableDiffusionXLPipeline,
    (SDXL, "image2image"): NPUStableDiffusionXLImg2ImgPipeline, (SDXL, "inpainting"): NPUStableDiffusionXLInpaintPipeline,
    (SD3, "text2image"): NPUStableDiffusion3Pipeline, (SD3, "image2image"): NPUStableDiffusion3Img2ImgPipeline,
    (SD3, "inpainting"): NPUStableDiffusion3InpaintPipeline,
}
