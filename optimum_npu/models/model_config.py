"""The HF config, normalised once at the boundary into a frozen dataclass.

The rest of the code base reads these fields and never an HF attribute name.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PretrainedConfig

from optimum_npu.models.registry import adapter_for

FULL = "full_attention"
SLIDING = "sliding_attention"


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
    layer_types: tuple[str, ...] = ()
    attention_scale: float | None = None
    attn_logit_softcapping: float | None = None
    final_logit_softcapping: float | None = None
    #: DeepStack (Qwen3-VL): visual features are added to the hidden states at the image tokens
    #: after each of the first ``deepstack_layers`` decoder layers (0: none).
    deepstack_layers: int = 0
    #: The MLP has three weight matrices (gate, up, down) rather than two (up, down: GPT-2, OPT, Phi).
    gated_mlp: bool = True
    #: Mixture of experts (0 experts: a dense model): experts per MoE layer, experts each token runs,
    #: an expert's intermediate size, the shared expert's (0: none), whether the top-k routing weights
    #: are renormalised, and how many layers are sparse (the others keep a dense MLP).
    num_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    shared_expert_intermediate_size: int = 0
    normalize_topk: bool = True
    moe_layers: int = 0
    #: gpt-oss's clamped SwiGLU experts: sigmoid gain and clamp (limit 0: ``silu(gate) * up``).
    swiglu_alpha: float = 1.0
    swiglu_limit: float = 0.0

    def is_sliding(self, layer: int) -> bool:
        """Whether a layer attends only to the last ``sliding_window`` positions."""
        return self.layer_types[layer] == SLIDING

    @property
    def has_sliding_layers(self) -> bool:
        return SLIDING in self.layer_types

    def ring_window(self, layer: int, max_seq_len: int) -> int:
        """The ring length a layer keeps, or 0 when it needs the full paged cache.

        A sliding window at least ``max_seq_len`` long never slides: the layer is global.
        """
        if self.is_sliding(layer) and self.sliding_window < max_seq_len:
            return self.sliding_window
        return 0

    @classmethod
    def from_hf(cls, config: PretrainedConfig) -> "DecoderModelConfig":
        text = config.get_text_config(decoder=True)
        adapter = adapter_for(config)
        architecture = (config.architectures or [type(config).__name__])[0]
        adapter.check_config(text, architecture)
        heads = text.num_attention_heads
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
        dtype = getattr(text, "dtype", None) or getattr(config, "dtype", None)
        window = getattr(text, "sliding_window", None)
        if getattr(text, "use_sliding_window", True) is False:
            window = None
        layer_types = tuple(getattr(text, "layer_types", None) or
                            [SLIDING if window is not None else FULL] * text.num_hidden_layers)
        if window is None:
            layer_types = (FULL,) * text.num_hidden_layers
        pre_attn_scalar = getattr(text, "query_pre_attn_scalar", None)
        vision = getattr(config, "vision_config", None)
        return cls(
            architecture=architecture,
            model_type=config.model_type,
            vocab_size=text.vocab_size,
            hidden_size=text.hidden_size,
            intermediate_size=adapter.config_value(text, "intermediate_size"),
            num_layers=text.num_hidden_layers,
            num_heads=heads,
            num_kv_heads=getattr(text, "num_key_value_heads", None) or heads,
            head_dim=head_dim,
            max_position_embeddings=text.max_position_embeddings,
            tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
            dtype=str(dtype).removeprefix("torch.") if dtype is not None else "float32",
            sliding_window=window if SLIDING in layer_types else None,
            layer_types=layer_types,
            attention_scale=(pre_attn_scalar or head_dim) ** -0.5,
            attn_logit_softcapping=getattr(text, "attn_logit_softcapping", None),
            final_logit_softcapping=getattr(text, "final_logit_softcapping", None),
            deepstack_layers=len(getattr(vision, "deepstack_visual_indexes", None) or ()),
            gated_mlp=adapter.mlp.gated,
            **_moe_fields(adapter, text),
        )

    @property
    def num_parameters(self) -> int:
        """Parameter count of the decoder these fields describe (biases left out)."""
        attn = self.hidden_size * self.head_dim * (2 * self.num_heads + 2 * self.num_kv_heads)
        mlp = (3 if self.gated_mlp else 2) * self.hidden_size * self.intermediate_size
        norms = 4 * self.hidden_size  # up to four per layer (sandwich norms); negligible either way
        embed = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        dense = self.num_layers - self.moe_layers
        return (self.num_layers * (attn + norms) + dense * mlp + self.moe_layers * self.moe_layer_parameters(
            self.num_experts) + embed + self.hidden_size)

    def moe_layer_parameters(self, experts: int) -> int:
        """Parameters of one MoE block holding ``experts`` routed experts (router and shared expert included)."""
        routed = 3 * self.hidden_size * self.moe_intermediate_size * experts
        shared = 3 * self.hidden_size * self.shared_expert_intermediate_size + (
            self.hidden_size if self.shared_expert_intermediate_size else 0)
        return routed + shared + self.num_experts * self.hidden_size


def _moe_fields(adapter, text) -> dict:
    """The mixture-of-experts fields of ``DecoderModelConfig`` (none for a dense adapter)."""
    if adapter.moe is None:
        return {}
    experts = adapter.config_value(text, "num_experts")
    sparse_step = getattr(text, "decoder_sparse_step", 1) or 1
    dense_only = set(getattr(text, "mlp_only_layers", None) or ())
    normalize = adapter.moe.normalize_topk
    if adapter.moe.clamped_swiglu and not (adapter.config_value(text, "swiglu_limit") or 0) > 0:
        raise ValueError(f"swiglu_limit={adapter.config_value(text, 'swiglu_limit')!r} is not supported by optimum-npu "
                         "(its clamped SwiGLU experts need a limit > 0, as gpt-oss's 7.0); use a checkpoint with "
                         "swiglu_limit > 0")
    return dict(
        num_experts=experts, experts_per_token=adapter.config_value(text, "num_experts_per_tok"),
        moe_intermediate_size=adapter.config_value(text, "moe_intermediate_size"),
        shared_expert_intermediate_size=adapter.config_value(text, "shared_expert_intermediate_size") or 0
        if adapter.moe.shared_expert else 0,
        normalize_topk=bool(adapter.config_value(text, "norm_topk_prob") if normalize is None else normalize),
        moe_layers=sum(1 for i in range(text.num_hidden_layers)
                       if i not in dense_only and (i + 1) % sparse_step == 0),
        **(dict(swiglu_alpha=float(adapter.config_value(text, "swiglu_alpha")),
                swiglu_limit=float(adapter.config_value(text, "swiglu_limit"))) if adapter.moe.clamped_swiglu else {}),
    )
