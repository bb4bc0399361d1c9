"""Mixture-of-experts decoders laid out like Llama, their MLP a sparse block run by ``npu.moe``.

Mixtral: softmax, top-k, the top-k weights always renormalised and applied in float32.
Qwen2-MoE: the same routing with ``norm_topk_prob`` from the config, plus a shared expert gated by
``sigmoid(shared_expert_gate(x))``; ``mlp_only_layers`` / ``decoder_sparse_step`` keep dense layers.
Qwen3-MoE: Qwen2-MoE's routing, q/k norms, no shared expert.
gpt-oss: top-k of the router's logits (with a bias), then a softmax over those k; experts with biases,
gate/up interleaved and stored transposed, a clamped SwiGLU; attention sinks and q/k/v/o biases;
alternating sliding-window / global layers; cos/sin given once per rotary frequency.

Tensor parallelism splits attention (and the shared expert, and the dense layers' MLP); routed experts
are replicated on every device of the group (their 3-D stacked weights take no column/row split).
"""

from optimum_npu.models.adapters.spec import LLAMA_TP_PLAN, MLP, Attention, DecoderAdapter, MoE, Positions

_SHARED_EXPERT_TP = {f"layers.*.mlp.shared_expert.{name}": style
                     for name, style in (("gate_proj", "colwise"), ("up_proj", "colwise"), ("down_proj", "rowwise"))}

MIXTRAL = DecoderAdapter(
    mlp=MLP("moe"), moe=MoE(normalize_topk=True, weights_in_input_dtype=False),
    config={"moe_intermediate_size": "intermediate_size"}, requires={"hidden_act": "silu"},
)
QWEN2_MOE = DecoderAdapter(
    mlp=MLP("moe"), moe=MoE(shared_expert="shared_expert", shared_gate="shared_expert_gate"),
    requires={"hidden_act": "silu"}, tp_plan=LLAMA_TP_PLAN | _SHARED_EXPERT_TP,
)
QWEN3_MOE = DecoderAdapter(mlp=MLP("moe"), moe=MoE(), requires={"hidden_act": "silu"})
GPT_OSS = DecoderAdapter(
    positions=Positions(half_width=True), attention=Attention(sinks="sinks"), mlp=MLP("moe"),
    moe=MoE(router="router", normalize_topk=False, softmax_after_topk=True, transposed=True, interleaved=True,
            biases=("gate_up_proj_bias", "down_proj_bias"), clamped_swiglu=True),
    config={"moe_intermediate_size": "intermediate_size"},
    tp_plan=LLAMA_TP_PLAN | {"layers.*.self_attn": "colwise"},   # the sinks [H] split with the query heads
)
