"""The Diffusers family: Stable Diffusion, SDXL and SD3 pipelines compiled per component in resolution buckets
(see ``docs/diffusers.md``)."""
