"""OPT: learned positions offset by 2, pre-LayerNorm layers with ``fc1``/``fc2`` on the layer itself."""

from optimum_npu.models.adapters.spec import MLP, Attention, DecoderAdapter, Positions

OPT = DecoderAdapter(
    text_model="model.decoder", final_norm="final_layer_norm", norms=("self_attn_layer_norm", "final_layer_norm"),
    positions=Positions("learned", "embed_positions", offset=2), attention=Attention(out="out_proj"),
    mlp=MLP("plain", module="", projections=("fc1", "fc2"), act="activation_fn", gated=False),
    config={"intermediate_size": "ffn_dim"},
    requires={"do_layer_norm_before": True, "_remove_final_layer_norm": False, "word_embed_proj_dim": "=hidden_size"},
    tp_plan={"layers.*.self_attn.q_proj": "colwise", "layers.*.self_attn.k_proj": "colwise",
             "layers.*.self_attn.v_proj": "colwise", "layers.*.self_attn.out_proj": "rowwise",
             "layers.*.fc1": "colwise", "layers.*.fc2": "rowwise"},
)
