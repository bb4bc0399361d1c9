"""Gemma 3: sandwich norms, rotary bases per layer type (local/global); q/k norms, soft-capping and
``query_pre_attn_scalar`` come from the config."""

from optimum_npu.models.adapters.spec import DecoderAdapter, Positions

SANDWICH_NORMS = ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                  "post_feedforward_layernorm")
GEMMA3 = DecoderAdapter(block="sandwich_norm", norms=SANDWICH_NORMS, positions=Positions(per_layer_type=True))
