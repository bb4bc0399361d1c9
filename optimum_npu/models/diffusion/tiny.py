"""Tiny Diffusers pipelines and a CLIP tokenizer built in code (tests, examples, benchmarks; nothing downloaded).

The component sizes follow Diffusers' own fast-test configs (two blocks of 4 and 8 channels, a 32-wide
CLIP text encoder); ``width`` scales the channels for a tiny-but-not-trivial benchmark pipeline.
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

import torch
from diffusers import (AutoencoderKL, DDIMScheduler, StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline,
                       StableDiffusionPipeline, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLInpaintPipeline,
                       StableDiffusionXLPipeline, UNet2DConditionModel)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

#: Tokens of the tiny CLIP tokenizer's prompts (its ``model_max_length``).
TINY_TOKENS = 16
SD_CLASSES = {"text2image": StableDiffusionPipeline, "image2image": StableDiffusionImg2ImgPipeline,
              "inpainting": StableDiffusionInpaintPipeline}
SDXL_CLASSES = {"text2image": StableDiffusionXLPipeline, "image2image": StableDiffusionXLImg2ImgPipeline,
                "inpainting": StableDiffusionXLInpaintPipeline}


def build_clip_tokenizer(tokens: int = TINY_TOKENS) -> CLIPTokenizer:
    """A CLIP BPE tokenizer over single letters (no merges): ``<|startoftext|>`` 0, ``<|endoftext|>`` 1 (padding)."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for letter in string.ascii_lowercase:
            vocab[letter + suffix] = len(vocab)
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "vocab.json").write_text(json.dumps(vocab))
        (Path(folder) / "merges.txt").write_text("#version: 0.2\n")
        return CLIPTokenizer(str(Path(folder) / "vocab.json"), str(Path(folder) / "merges.txt"),
                             model_max_length=tokens, pad_token="<|endoftext|>")


def _clip(cls, width: int, tokens: int, **extra):
    config = CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32 * width,
                            intermediate_size=37 * width, num_attention_heads=4, num_hidden_layers=2,
                            vocab_size=2 + 2 * 26, max_position_embeddings=tokens, layer_norm_eps=1e-5, **extra)
    return cls(config).eval()


def _vae(width: int) -> AutoencoderKL:
    return AutoencoderKL(block_out_channels=[4 * width, 8 * width], in_channels=3, out_channels=3,
                         down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                         latent_channels=4, norm_num_groups=2, sample_size=32).eval()


def _scheduler() -> DDIMScheduler:
    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, steps_offset=1,
                         set_alpha_to_one=False)


def build_sd_pipeline(task: str = "text2image", seed: int = 0, width: int = 1, tokens: int = TINY_TOKENS):
    """A randomly initialised tiny Stable Diffusion pipeline (fp32); inpainting's UNet takes 9 channels."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(block_out_channels=(4 * width, 8 * width), layers_per_block=1, sample_size=16,
                                in_channels=9 if task == "inpainting" else 4, out_channels=4,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32 * width,
                                norm_num_groups=2).eval()
    return SD_CLASSES[task](vae=_vae(width), text_encoder=_clip(CLIPTextModel, width, tokens),
                            tokenizer=build_clip_tokenizer(tokens), unet=unet, scheduler=_scheduler(),
                            safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def build_sdxl_pipeline(task: str = "text2image", seed: int = 0, tokens: int = TINY_TOKENS):
    """A randomly initialised tiny SDXL pipeline (two CLIP text encoders, the second with projection)."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(block_out_channels=(4, 8), layers_per_block=1, sample_size=16,
                                in_channels=9 if task == "inpainting" else 4, out_channels=4,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                                use_linear_projection=True, addition_embed_type="text_time",
                                addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
                                projection_class_embeddings_input_dim=80, cross_attention_dim=64,
                                norm_num_groups=2).eval()
    extra = {"requires_aesthetics_score": True} if task != "text2image" else {}
    if task != "text2image":   # the refiner-style variants condition on an aesthetic score instead of a crop
        unet = UNet2DConditionModel.from_config({**unet.config, "projection_class_embeddings_input_dim": 72}).eval()
    return SDXL_CLASSES[task](vae=_vae(1), text_encoder=_clip(CLIPTextModel, 1, tokens),
                              text_encoder_2=_clip(CLIPTextModelWithProjection, 1, tokens, projection_dim=32),
                              tokenizer=build_clip_tokenizer(tokens), tokenizer_2=build_clip_tokenizer(tokens),
                              unet=unet, scheduler=_scheduler(), **extra)


def build_t5_tokenizer():
    """A byte-level fast tokenizer for the tiny T5 encoder (``<pad>`` 0, ``</s>`` 2, right padding)."""
    from optimum_npu.models.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    tokenizer.padding_side = "right"
    return tokenizer


def build_sd3_pipeline(task: str = "text2image", seed: int = 0, tokens: int = TINY_TOKENS):
    """A randomly initialised tiny SD3 pipeline: one-layer SD3 transformer, two CLIP encoders with projection, T5."""
    from diffusers import (FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Img2ImgPipeline,
                           StableDiffusion3InpaintPipeline, StableDiffusion3Pipeline)
    from transformers import T5Config, T5EncoderModel

    from optimum_npu.models.tiny import VOCAB_SIZE

    classes = {"text2image": StableDiffusion3Pipeline, "image2image": StableDiffusion3Img2ImgPipeline,
               "inpainting": StableDiffusion3InpaintPipeline}
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(sample_size=16, patch_size=1, in_channels=4, num_layers=2,
                                        attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32,
                                        joint_attention_dim=32, pooled_projection_dim=64, out_channels=4).eval()
    t5 = T5EncoderModel(T5Config(vocab_size=VOCAB_SIZE, d_model=32, d_ff=37, d_kv=8, num_heads=4, num_layers=2,
                                 pad_token_id=0, eos_token_id=2, decoder_start_token_id=0)).eval()
    vae = AutoencoderKL(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4, 8), layers_per_block=1,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        latent_channels=4, norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False,
                        shift_factor=0.0609, scaling_factor=1.5035).eval()
    return classes[task](transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae,
                         text_encoder=_clip(CLIPTextModelWithProjection, 1, tokens, projection_dim=32),
                         text_encoder_2=_clip(CLIPTextModelWithProjection, 1, tokens, projection_dim=32),
                         text_encoder_3=t5, tokenizer=build_clip_tokenizer(tokens),
                         tokenizer_2=build_clip_tokenizer(tokens), tokenizer_3=build_t5_tokenizer())
