"""The component configs of public pipelines, built weightless on ``meta`` for the estimates (nothing downloaded).

Each preset writes down the published ``config.json`` values of the pipeline's components:

- ``sd15``: runwayml/stable-diffusion-v1-5 (UNet 860M: blocks 320/640/1280/1280, cross-attention 768; CLIP ViT-L/14
  text encoder; VAE 128/256/512/512), 512x512;
- ``sdxl``: stabilityai/stable-diffusion-xl-base-1.0 (UNet 2.6B: blocks 320/640/1280, transformer depth 1/2/10,
  cross-attention 2048, text-time embeddings; CLIP ViT-L + OpenCLIP ViT-bigG with projection), 1024x1024;
- ``sd3-medium``: stabilityai/stable-diffusion-3-medium-diffusers (MMDiT 2B: 24 joint blocks of 24 heads x 64,
  patch 2, 16 latent channels; CLIP-L and CLIP-G with projection, T5-XXL encoder), 1024x1024.

``meta_pipeline(folder)`` does the same from a local Diffusers folder's ``model_index.json`` and component
``config.json`` files (weights are never read).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from diffusers import AutoencoderKL, SD3Transformer2DModel, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

from optimum_npu.untrusted import expect_dict, load_json

CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
              max_position_embeddings=77, vocab_size=49408, hidden_act="quick_gelu", projection_dim=768)
CLIP_BIG_G = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
                  max_position_embeddings=77, vocab_size=49408, hidden_act="gelu", projection_dim=1280)
T5_XXL = dict(d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24, vocab_size=32128,
              feed_forward_proj="gated-gelu", relative_attention_num_buckets=32)
VAE = dict(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
           up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, norm_num_groups=32)

PRESETS: dict[str, dict[str, Any]] = {
    "sd15": {"resolution": (512, 512), "text_encoder": (CLIPTextModel, CLIP_L),
             "unet": dict(sample_size=64, cross_attention_dim=768),
             "vae": dict(VAE, latent_channels=4, sample_size=512)},
    "sdxl": {"resolution": (1024, 1024), "text_encoder": (CLIPTextModel, CLIP_L),
             "text_encoder_2": (CLIPTextModelWithProjection, CLIP_BIG_G),
             "unet": dict(sample_size=128, block_out_channels=(320, 640, 1280),
                          down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                          up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                          transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
                          cross_attention_dim=2048, use_linear_projection=True, addition_embed_type="text_time",
                          addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816),
             "vae": dict(VAE, latent_channels=4, sample_size=1024)},
    "sd3-medium": {"resolution": (1024, 1024), "text_encoder": (CLIPTextModelWithProjection, CLIP_L),
                   "text_encoder_2": (CLIPTextModelWithProjection, CLIP_BIG_G), "text_encoder_3": (T5EncoderModel, T5_XXL),
                   "transformer": dict(sample_size=128, patch_size=2, in_channels=16, num_layers=24,
                                       attention_head_dim=64, num_attention_heads=24, joint_attention_dim=4096,
                                       caption_projection_dim=1536, pooled_projection_dim=2048, out_channels=16,
                                       pos_embed_max_size=192),
                   "vae": dict(VAE, latent_channels=16, sample_size=1024, use_quant_conv=False,
                               use_post_quant_conv=False)},
}
_TEXT_CONFIGS = {CLIPTextModel: CLIPTextConfig, CLIPTextModelWithProjection: CLIPTextConfig,
                 T5EncoderModel: T5Config}
_TOKENS = {"tokenizer": 77, "tokenizer_2": 77, "tokenizer_3": 256}


def weightless_pipeline(parts: dict[str, Any]) -> SimpleNamespace:
    """A pipeline-shaped object: components on ``meta``, tokenizers reduced to their length."""
    with torch.device("meta"):
        built = {}
        for name, value in parts.items():
            if name.startswith("text_encoder"):
                cls, config = value
                built[name] = cls(_TEXT_CONFIGS[cls](**config)).eval()
            elif name == "unet":
                built[name] = UNet2DConditionModel(**value).eval()
            elif name == "transformer":
                built[name] = SD3Transformer2DModel(**value).eval()
            elif name == "vae":
                built[name] = AutoencoderKL(**value).eval()
    for index, name in enumerate(("tokenizer", "tokenizer_2", "tokenizer_3")):
        if f"text_encoder{'' if index == 0 else f'_{index + 1}'}" in built:
            built[name] = SimpleNamespace(model_max_length=_TOKENS[name])
    return SimpleNamespace(**built)


def preset_pipeline(name: str) -> tuple[SimpleNamespace, tuple[int, int]]:
    """The weightless stand-in of a preset pipeline and its native resolution."""
    if name not in PRESETS:
        raise ValueError(f"unknown pipeline preset {name!r}; presets: {sorted(PRESETS)} (or a Diffusers folder)")
    parts = dict(PRESETS[name])
    return weightless_pipeline({k: v for k, v in parts.items() if k != "resolution"}), parts["resolution"]


#: Component classes a Diffusers folder may name (model_index.json), by component.
_FOLDER_CLASSES = {"CLIPTextModel": CLIPTextModel, "CLIPTextModelWithProjection": CLIPTextModelWithProjection,
                   "T5EncoderModel": T5EncoderModel}


def meta_pipeline(folder: str | Path) -> SimpleNamespace:
    """The weightless stand-in of a local Diffusers folder (``model_index.json`` + component configs)."""
    folder = Path(folder)
    index = expect_dict(load_json(folder / "model_index.json"), str(folder / "model_index.json"))
    parts: dict[str, Any] = {}
    for name in ("text_encoder", "text_encoder_2", "text_encoder_3", "unet", "transformer", "vae"):
        entry = index.get(name)
        if not isinstance(entry, list) or entry[1] is None:
            continue
        config = expect_dict(load_json(folder / name / "config.json"), str(folder / name / "config.json"))
        config = {k: v for k, v in config.items() if not k.startswith("_")}
        if name.startswith("text_encoder"):
            if entry[1] not in _FOLDER_CLASSES:
                raise ValueError(f"{folder}: {name} is a {str(entry[1])[:60]!r}; supported: {sorted(_FOLDER_CLASSES)}")
            cls = _FOLDER_CLASSES[entry[1]]
            keep = set(_TEXT_CONFIGS[cls]().to_dict())
            parts[name] = (cls, {k: v for k, v in config.items() if k in keep})
        else:
            parts[name] = config
    pipe = weightless_pipeline(parts)
    for name in ("tokenizer", "tokenizer_2"):
        path = folder / name / "tokenizer_config.json"
        if hasattr(pipe, name) and path.is_file():
            length = json.loads(path.read_text()).get("model_max_length", 77)
            pipe.__dict__[name] = SimpleNamespace(model_max_length=int(min(length, 77)))
    return pipe
