"""GPT-2: learned absolute positions, Conv1D projections (weights [in, out]), fused ``c_attn``."""

from optimum_npu.models.adapters.spec import MLP, Attention, DecoderAdapter, Positions

GPT2 = DecoderAdapter(
    text_model="transformer", embed="wte", layers="h", final_norm="ln_f", norms=("ln_1", "ln_2"),
    positions=Positions("learned", "wpe"), linear="conv1d",
    attention=Attention("attn", qkv="fused", projections=("c_attn",), out="c_proj"),
    mlp=MLP("plain", projections=("c_fc", "c_proj"), act="act", gated=False),
    config={"intermediate_size": "n_inner"}, config_defaults={"intermediate_size": ("hidden_size", 4)},
    requires={"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "add_cross_attention": False},
    tp_plan={"h.*.attn.c_attn": "colwise_qkv", "h.*.attn.c_proj": "rowwise", "h.*.mlp.c_fc": "colwise",
             "h.*.mlp.c_proj": "rowwise"},
)
