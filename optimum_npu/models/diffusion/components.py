"""The compiled parts of a pipeline: what each one's graph takes and returns, and its static-shape wrapper.

| kind | HF classes | graph inputs -> outputs |
|---|---|---|
| ``text_encoder`` | CLIPTextModel(WithProjection), T5EncoderModel | input_ids [B, S] -> out0, out1, penultimate [B, S, C] |
| ``unet`` | UNet2DConditionModel | sample [B, C, h, w], timestep [B], encoder_hidden_states [B, S, E] (+ SDXL's text_embeds [B, P], time_ids [B, 6]) -> noise [B, C, h, w] |
| ``transformer`` | SD3Transformer2DModel | hidden_states, timestep, encoder_hidden_states, pooled_projections -> noise |
| ``vae_decoder`` | AutoencoderKL | latents [B, C, h, w] -> image [B, 3, H, W] |
| ``vae_encoder`` | AutoencoderKL | image [B, 3, H, W] -> latent moments [B, 2C, h, w] |

Text encoders return two of the model's outputs in its own order (CLIP: last hidden state and pooled output;
with projection: text embeds and last hidden state; T5: the last hidden state twice) plus the penultimate
hidden state SDXL and SD3 read. The timestep is a float32 vector (the schedulers' integer steps are exact
in float32). The wrappers hold the HF module as ``model`` so weights keep their checkpoint names.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

#: Prefix of the HF module inside every wrapper (stripped from weight names).
WRAPPER_PREFIX = "model."

#: HF class names each kind compiles (an artifact's stored class is checked against these).
CLASSES = {
    "text_encoder": ("CLIPTextModel", "CLIPTextModelWithProjection", "T5EncoderModel"),
    "unet": ("UNet2DConditionModel",),
    "transformer": ("SD3Transformer2DModel",),
    "vae_decoder": ("AutoencoderKL",),
    "vae_encoder": ("AutoencoderKL",),
}
#: The component family (registry name) that compiles each graph kind; the VAE's halves are one family.
KIND_FAMILY = {"text_encoder": "diffusion_text_encoder", "unet": "diffusion_unet",
               "transformer": "diffusion_transformer", "vae_decoder": "diffusion_vae", "vae_encoder": "diffusion_vae"}
#: Graph inputs of each kind, in order (SDXL's UNet adds ``text_embeds`` and ``time_ids``).
INPUTS = {
    "text_encoder": ("input_ids",),
    "unet": ("sample", "timestep", "encoder_hidden_states"),
    "unet_sdxl": ("sample", "timestep", "encoder_hidden_states", "text_embeds", "time_ids"),
    "transformer": ("hidden_states", "timestep", "encoder_hidden_states", "pooled_projections"),
    "vae_decoder": ("latents",),
    "vae_encoder": ("image",),
}


@dataclass(frozen=True)
class ImageBucket:
    """One compiled graph of an image component: ``batch`` rows at ``height`` x ``width`` pixels."""

    name: str
    kind: str
    batch: int
    height: int
    width: int
    tokens: int   # the latent positions of one row (bucket size, for reports)

    def attributes(self) -> dict:
        return {"kind": self.kind, "batch": self.batch, "tokens": self.tokens, "height": self.height,
                "width": self.width}


class TextEncoderGraph(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.is_t5 = type(model).__name__ == "T5EncoderModel"

    def forward(self, input_ids: torch.Tensor):
        result = self.model(input_ids, output_hidden_states=True, return_dict=True)
        if self.is_t5:
            return result[0], result[0], result.hidden_states[-2]
        return result[0], result[1], result.hidden_states[-2]


class UNetGraph(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, sample, timestep, encoder_hidden_states, text_embeds=None, time_ids=None):
        added = {"text_embeds": text_embeds, "time_ids": time_ids} if text_embeds is not None else None
        return self.model(sample, timestep, encoder_hidden_states=encoder_hidden_states, added_cond_kwargs=added,
                          return_dict=False)[0]


class TransformerGraph(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, hidden_states, timestep, encoder_hidden_states, pooled_projections):
        return self.model(hidden_states=hidden_states, timestep=timestep, encoder_hidden_states=encoder_hidden_states,
                          pooled_projections=pooled_projections, return_dict=False)[0]


class VaeDecoderGraph(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, latents):
        return self.model.decode(latents, return_dict=False)[0]


class VaeEncoderGraph(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image):
        return self.model.encode(image).latent_dist.parameters


WRAPPERS = {"text_encoder": TextEncoderGraph, "unet": UNetGraph, "transformer": TransformerGraph,
            "vae_decoder": VaeDecoderGraph, "vae_encoder": VaeEncoderGraph}
