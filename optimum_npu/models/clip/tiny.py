"""A tiny CLIP and its processor (WordPiece tokenizer + image processor) built in code (tests, examples)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel

from optimum_npu.models.encoder.tiny import VOCAB, build_wordpiece_tokenizer
from optimum_npu.models.encoder.tiny_vision import build_image_processor

#: Tower sizes: two layers each, a 16-dim joint embedding; text ids and specials of ``tiny.VOCAB``
#: ([PAD]=0, [CLS]=2 starts a text, [SEP]=3 ends it and is the token CLIP pools).
TEXT = dict(vocab_size=len(VOCAB), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=40, pad_token_id=0, bos_token_id=2, eos_token_id=3)
VISION = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
              num_attention_heads=4)


def build_clip(seed: int = 0) -> CLIPModel:
    """A randomly initialised tiny ``CLIPModel`` in eval mode."""
    torch.manual_seed(seed)
    config = CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=16)
    config.architectures = ["CLIPModel"]
    return CLIPModel(config).eval()


def save_clip(directory: str | Path, seed: int = 0) -> Path:
    """``build_clip`` + its tokenizer and image processor (32 px) saved as a checkpoint folder."""
    build_clip(seed).save_pretrained(directory)
    build_wordpiece_tokenizer(directory)
    build_image_processor(directory, VISION["image_size"])
    return Path(directory)
