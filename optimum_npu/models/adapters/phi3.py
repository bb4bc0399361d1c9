"""Phi-3: Llama-like, with fused ``qkv_proj`` (q, k, v rows) and fused ``gate_up_proj`` (gate, up rows)."""

from optimum_npu.models.adapters.spec import MLP, Attention, DecoderAdapter

PHI3 = DecoderAdapter(
    attention=Attention(qkv="fused", projections=("qkv_proj",)),
    mlp=MLP("fused_gated", projections=("gate_up_proj", "down_proj"), act="activation_fn"),
    tp_plan={"layers.*.self_attn.qkv_proj": "colwise_qkv", "layers.*.self_attn.o_proj": "rowwise",
             "layers.*.mlp.gate_up_proj": "colwise_gate_up", "layers.*.mlp.down_proj": "rowwise"},
)
