"""The configs of public encoder-decoder checkpoints, built weightless on ``meta`` for the planner (nothing
downloaded).

Each preset writes down the published ``config.json`` values that decide memory and speed (Hugging Face model cards /
config files):

- ``t5-base``: google-t5/t5-base (d_model 768, d_kv 64, d_ff 3072, 12 + 12 layers, 12 heads, vocab 32128, ReLU);
- ``t5-large``: google-t5/t5-large (d_model 1024, d_kv 64, d_ff 4096, 24 + 24 layers, 16 heads, vocab 32128);
- ``bart-large``: facebook/bart-large (d_model 1024, 12 + 12 layers, 16 heads, FFN 4096, 1024 positions,
  vocab 50265);
- ``whisper-small``: openai/whisper-small (d_model 768, 12 + 12 layers, 12 heads, FFN 3072, 80 mel bins,
  1500 encoder / 448 decoder positions, vocab 51865);
- ``whisper-large-v3``: openai/whisper-large-v3 (d_model 1280, 32 + 32 layers, 20 heads, FFN 5120, 128 mel bins,
  1500 / 448 positions, vocab 51866).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import (BartConfig, BartForConditionalGeneration, PegasusConfig, PegasusForConditionalGeneration,
                          PretrainedConfig, T5Config, T5ForConditionalGeneration, WhisperConfig,
                          WhisperForConditionalGeneration)

_T5 = dict(d_kv=64, vocab_size=32128, relative_attention_num_buckets=32, feed_forward_proj="relu",
           pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, tie_word_embeddings=True)
_WHISPER = dict(max_source_positions=1500, max_target_positions=448, activation_function="gelu",
                decoder_start_token_id=50258, pad_token_id=50257, bos_token_id=50257, eos_token_id=50257)

#: name -> (architecture, config fields, source).
PRESETS: dict[str, tuple[str, dict[str, Any], str]] = {
    "t5-base": ("T5ForConditionalGeneration", dict(_T5, d_model=768, d_ff=3072, num_layers=12, num_heads=12),
                "google-t5/t5-base config.json"),
    "t5-large": ("T5ForConditionalGeneration", dict(_T5, d_model=1024, d_ff=4096, num_layers=24, num_heads=16),
                 "google-t5/t5-large config.json"),
    "bart-large": ("BartForConditionalGeneration",
                   dict(d_model=1024, encoder_layers=12, decoder_layers=12, encoder_attention_heads=16,
                        decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096,
                        max_position_embeddings=1024, vocab_size=50265, activation_function="gelu",
                        pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2),
                   "facebook/bart-large config.json"),
    "whisper-small": ("WhisperForConditionalGeneration",
                      dict(_WHISPER, d_model=768, encoder_layers=12, decoder_layers=12, encoder_attention_heads=12,
                           decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, num_mel_bins=80,
                           vocab_size=51865),
                      "openai/whisper-small config.json"),
    "whisper-large-v3": ("WhisperForConditionalGeneration",
                         dict(_WHISPER, d_model=1280, encoder_layers=32, decoder_layers=32,
                              encoder_attention_heads=20, decoder_attention_heads=20, encoder_ffn_dim=5120,
                              decoder_ffn_dim=5120, num_mel_bins=128, vocab_size=51866),
                         "openai/whisper-large-v3 config.json"),
}
#: Architecture -> (config class, model class): the classes a weightless model is built with (an allow-list).
CLASSES: dict[str, tuple[type, type]] = {
    "T5ForConditionalGeneration": (T5Config, T5ForConditionalGeneration),
    "BartForConditionalGeneration": (BartConfig, BartForConditionalGeneration),
    "PegasusForConditionalGeneration": (PegasusConfig, PegasusForConditionalGeneration),
    "WhisperForConditionalGeneration": (WhisperConfig, WhisperForConditionalGeneration),
}


def preset_config(name: str) -> PretrainedConfig:
    """The HF config of a built-in shape."""
    if name not in PRESETS:
        raise ValueError(f"unknown seq2seq shape {name!r}; built-in: {sorted(PRESETS)} (or a folder with config.json)")
    architecture, fields, _ = PRESETS[name]
    return CLASSES[architecture][0](architectures=[architecture], **fields)


def folder_config(folder: str | Path) -> PretrainedConfig:
    """The HF config of a local checkpoint folder (its ``config.json`` only; weights are never read)."""
    from transformers import AutoConfig

    path = Path(folder)
    if not (path / "config.json").is_file():
        raise ValueError(f"{folder}: no config.json; give a checkpoint folder or a built-in shape {sorted(PRESETS)}")
    try:
        return AutoConfig.from_pretrained(path)
    except (ValueError, OSError, KeyError) as err:
        raise ValueError(f"{path / 'config.json'} could not be read as a Transformers config: "
                         f"{str(err).splitlines()[0][:200]}") from None


def meta_model(hf_config: PretrainedConfig, architecture: str, dtype: str) -> torch.nn.Module:
    """The model of ``hf_config`` on the ``meta`` device in ``dtype`` (no weights, no memory)."""
    with torch.device("meta"):
        return CLASSES[architecture][1](hf_config).to(getattr(torch, dtype)).eval()
