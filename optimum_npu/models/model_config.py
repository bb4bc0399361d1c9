"""The HF config, normalised once at the boundary into a frozen dataclass.

The rest of the code base reads these fields and never an HF attribute name.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PretrainedConfig


@dataclass(frozen=True)
class DecoderModelConfig:
    """Shape facts of a decoder-only language model that compilation and sizing need."""

    architecture: str
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_position_embeddings: int
    tie_word_embeddings: bool
    dtype: str
    sliding_window: int | None = None

    @classmethod
    def from_hf(cls, config: PretrainedConfig) -> "DecoderModelConfig":
        text = config.get_text_config(decoder=True)
        heads = text.num_attention_heads
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
        dtype = getattr(text, "dtype", None) or getattr(config, "dtype", None)
        window = getattr(text, "sliding_window", None)
        if getattr(text, "use_sliding_window", True) is False:
            window = None
        return cls(
            architecture=(config.architectures or [type(config).__name__])[0],
            model_type=config.model_type,
            vocab_size=text.vocab_size,
            hidden_size=text.hidden_size,
            intermediate_size=text.intermediate_size,
            num_layers=text.num_hidden_layers,
            num_heads=heads,
            num_kv_heads=getattr(text, "num_key_value_heads", None) or heads,
            head_dim=head_dim,
            max_position_embeddings=text.max_position_embeddings,
            tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
            dtype=str(dtype).removeprefix("torch.") if dtype is not None else "float32",
            sliding_window=window,
        )

    @property
    def num_parameters(self) -> int:
        """Parameter count of the standard pre-norm gated-MLP decoder these fields describe."""
        attn = self.hidden_size * self.head_dim * (2 * self.num_heads + 2 * self.num_kv_heads)
        mlp = 3 * self.hidden_size * self.intermediate_size
        norms = 2 * self.hidden_size
        embed = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * (attn + mlp + norms) + embed + self.hidden_size
