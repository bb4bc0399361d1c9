"""The encoder-decoder architectures compiled, normalised from their HF configs once, at the boundary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from optimum_npu.models.seq2seq.layers import BART, PEGASUS, T5, WHISPER, Seq2SeqLayout

#: HF class name -> the decoder layout (``layers.py``).
LAYOUTS: dict[str, Seq2SeqLayout] = {
    "T5ForConditionalGeneration": T5,
    "BartForConditionalGeneration": BART,
    "WhisperForConditionalGeneration": WHISPER,
    "PegasusForConditionalGeneration": PEGASUS,
}
#: Architectures whose encoder reads audio features (one fixed mel window) rather than token ids.
AUDIO = ("WhisperForConditionalGeneration",)


@dataclass(frozen=True)
class Seq2SeqModelConfig:
    """What the family reads from an HF config (names differ per architecture).

    Attributes:
        architecture: the HF class name (a ``LAYOUTS`` key).
        num_layers, heads, head_dim, hidden_size: the decoder's attention shape.
        vocab_size: logits width.
        max_source_positions: the encoder's position limit (None: relative positions, T5).
        max_target_positions: the decoder's position limit (None: T5).
        audio_frames: Whisper: mel frames of the fixed window (2 x encoder positions); None for text.
        num_mel_bins: Whisper's feature channels.
        pad_token_id: the id padded encoder tokens get.
        encoder_heads: the encoder's attention heads (0: as many as the decoder's).
    """

    architecture: str
    num_layers: int
    heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    max_source_positions: int | None
    max_target_positions: int | None
    audio_frames: int | None
    num_mel_bins: int | None
    pad_token_id: int
    encoder_heads: int = 0

    @property
    def layout(self) -> Seq2SeqLayout:
        return LAYOUTS[self.architecture]

    @property
    def cross_len(self) -> int | None:
        """Encoder positions each cross-attention slot holds for audio (text: the largest encoder bucket)."""
        return self.audio_frames // 2 if self.audio_frames else None

    @classmethod
    def from_hf(cls, config: Any, architecture: str) -> "Seq2SeqModelConfig":
        if architecture not in LAYOUTS:
            raise ValueError(f"{architecture} is not an encoder-decoder architecture optimum-npu compiles; supported: "
                             f"{sorted(LAYOUTS)}")
        if architecture == "T5ForConditionalGeneration":
            heads, layers, hidden = config.num_heads, config.num_decoder_layers, config.d_model
            head_dim, source, target, encoder_heads = config.d_kv, None, None, config.num_heads
        else:
            heads, layers, hidden = config.decoder_attention_heads, config.decoder_layers, config.d_model
            encoder_heads = config.encoder_attention_heads
            head_dim = hidden // heads
            if architecture in AUDIO:
                source, target = config.max_source_positions, config.max_target_positions
            else:
                source = target = config.max_position_embeddings
        audio = architecture in AUDIO
        pad = config.pad_token_id if isinstance(config.pad_token_id, int) and config.pad_token_id >= 0 else 0
        return cls(architecture, int(layers), int(heads), int(head_dim), int(hidden), int(config.vocab_size),
                   source, target, 2 * source if audio else None, config.num_mel_bins if audio else None, pad,
                   int(encoder_heads))
