"""A tiny Whisper built in code: model, byte-level tokenizer with Whisper's special and timestamp tokens, a feature
extractor with a one-second window, and the generation config Whisper's generate() reads (nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration,
                          WhisperTokenizer)

#: One-second mel window at 16 kHz (hop 160): 100 frames, 50 encoder positions.
SAMPLING_RATE, CHUNK_SECONDS, MEL_BINS = 16000, 1, 16
LANGUAGES = ("en", "de", "fr")
SPECIALS = (["<|endoftext|>", "<|startoftranscript|>"] + [f"<|{code}|>" for code in LANGUAGES]
            + ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>",
               "<|notimestamps|>"])
#: Timestamp tokens every 0.02 s over the window (after the special tokens, as Whisper's tokenizer expects).
TIMESTAMPS = [f"<|{i * 0.02:.2f}|>" for i in range(CHUNK_SECONDS * 50 + 1)]


def _byte_vocab() -> dict[str, int]:
    from tokenizers.pre_tokenizers import ByteLevel

    return {ch: i for i, ch in enumerate(sorted(ByteLevel.alphabet()))}


def build_whisper_tokenizer(directory: str | Path | None = None) -> WhisperTokenizer:
    """Byte-level BPE (no merges) + Whisper's special tokens and timestamps; saved in ``directory`` when given."""
    vocab = _byte_vocab()
    tokenizer = WhisperTokenizer(vocab=vocab, merges=[], additional_special_tokens=SPECIALS[1:], pad_token=SPECIALS[0])
    tokenizer.add_tokens(TIMESTAMPS)
    if directory is not None:
        tokenizer.save_pretrained(directory)
    return tokenizer


def build_feature_extractor(directory: str | Path | None = None) -> WhisperFeatureExtractor:
    extractor = WhisperFeatureExtractor(feature_size=MEL_BINS, sampling_rate=SAMPLING_RATE, chunk_length=CHUNK_SECONDS)
    if directory is not None:
        extractor.save_pretrained(directory)
    return extractor


def build_whisper(seed: int = 0) -> WhisperForConditionalGeneration:
    """A randomly initialised tiny Whisper (fp32, eval) whose vocabulary is ``build_whisper_tokenizer``'s."""
    tokenizer = build_whisper_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIALS}
    config = WhisperConfig(vocab_size=len(tokenizer), num_mel_bins=MEL_BINS, d_model=32, encoder_layers=2,
                           decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                           encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=CHUNK_SECONDS * 50,
                           max_target_positions=64, pad_token_id=ids["<|endoftext|>"],
                           bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|endoftext|>"],
                           decoder_start_token_id=ids["<|startoftranscript|>"], init_std=0.2,
                           begin_suppress_tokens=None, suppress_tokens=None,
                           architectures=["WhisperForConditionalGeneration"])
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"], bos_token_id=ids["<|endoftext|>"], is_multilingual=True,
        lang_to_id={f"<|{code}|>": ids[f"<|{code}|>"] for code in LANGUAGES},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        no_timestamps_token_id=ids["<|notimestamps|>"], prev_sot_token_id=ids["<|startofprev|>"],
        max_initial_timestamp_index=50, alignment_heads=[[1, 0], [1, 2]], begin_suppress_tokens=[],
        suppress_tokens=[], max_length=64)
    return model


def save_whisper(directory: str | Path, seed: int = 0) -> Path:
    """``build_whisper`` + tokenizer + feature extractor saved as a checkpoint folder."""
    build_whisper(seed).save_pretrained(directory)
    build_whisper_tokenizer(directory)
    build_feature_extractor(directory)
    return Path(directory)
