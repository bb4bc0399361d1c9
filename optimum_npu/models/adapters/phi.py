"""Phi (1, 1.5, 2): parallel attention and MLP after one LayerNorm, partial rotary, ``dense`` output."""

from optimum_npu.models.adapters.spec import MLP, Attention, DecoderAdapter

PHI = DecoderAdapter(
    final_norm="final_layernorm", block="parallel", norms=("input_layernorm",),
    attention=Attention(out="dense", qk_norm=("q_layernorm", "k_layernorm")),
    mlp=MLP(gated=False),
    tp_plan={"layers.*.self_attn.q_proj": "colwise", "layers.*.self_attn.k_proj": "colwise",
             "layers.*.self_attn.v_proj": "colwise", "layers.*.self_attn.dense": "rowwise",
             "layers.*.mlp.fc1": "colwise", "layers.*.mlp.fc2": "rowwise"},
)
