"""A tiny Wav2Vec2 CTC model, character tokenizer and feature extractor built in code (tests, examples)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import (Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC,
                          Wav2Vec2Processor)

#: CTC vocabulary: padding (the CTC blank), unknown, word delimiter and letters.
CHARACTERS = ["<pad>", "<unk>", "|"] + list("abcdefghijklmnopqrstuvwxyz'")
#: A layer-norm feature encoder (the variant whose frames do not depend on padding) with a 345-sample receptive
#: field and a 320-sample hop (strides 5 x 4 x 4 x 4), two encoder layers.
CONFIG = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
              conv_dim=(16, 16, 16, 16), conv_stride=(5, 4, 4, 4), conv_kernel=(10, 8, 4, 4), conv_bias=True,
              num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, feat_extract_norm="layer",
              do_stable_layer_norm=True, pad_token_id=0, ctc_loss_reduction="mean")


def build_ctc(seed: int = 0) -> Wav2Vec2ForCTC:
    """A randomly initialised tiny ``Wav2Vec2ForCTC`` in eval mode."""
    torch.manual_seed(seed)
    config = Wav2Vec2Config(vocab_size=len(CHARACTERS), **CONFIG)
    config.architectures = ["Wav2Vec2ForCTC"]
    return Wav2Vec2ForCTC(config).eval()


def build_processor(directory: str | Path) -> Wav2Vec2Processor:
    """A character CTC tokenizer and a 16 kHz feature extractor (normalising, returning the sample mask), saved."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate(CHARACTERS)}))
    tokenizer = Wav2Vec2CTCTokenizer(str(directory / "vocab.json"), unk_token="<unk>", pad_token="<pad>",
                                     word_delimiter_token="|")
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                         return_attention_mask=True)
    processor = Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer)
    processor.save_pretrained(directory)
    return processor


def save_ctc(directory: str | Path, seed: int = 0) -> Path:
    """``build_ctc`` + its processor saved as a checkpoint folder."""
    build_ctc(seed).save_pretrained(directory)
    build_processor(directory)
    return Path(directory)
