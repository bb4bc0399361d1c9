"""What a decoder adapter states about one HF architecture: module paths and layout, as data.

The static-shape decoder (``models/decoder/wrapper.py``) reads nothing but these fields; the HF
modules are reused as they are wherever possible so every weight keeps its checkpoint name.
A new architecture is one ``DecoderAdapter`` value (``models/adapters/<name>.py``), one registry
line (``models/registry.py``) and one parity test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: The values each layout field may take (block -> number of norms it reads).
BLOCKS = {"pre_norm": 2, "sandwich_norm": 4, "parallel": 1}
KINDS = {"positions.kind": ("rotary", "learned"), "attention.qkv": ("separate", "fused"),
         "mlp.kind": ("module", "plain", "fused_gated", "moe"), "linear": ("linear", "conv1d")}

#: The layout every Llama-like decoder shares: separate q/k/v, o_proj, gated MLP.
LLAMA_TP_PLAN = {"layers.*.self_attn.q_proj": "colwise", "layers.*.self_attn.k_proj": "colwise",
                 "layers.*.self_attn.v_proj": "colwise", "layers.*.self_attn.o_proj": "rowwise",
                 "layers.*.mlp.gate_proj": "colwise", "layers.*.mlp.up_proj": "colwise",
                 "layers.*.mlp.down_proj": "rowwise"}


@dataclass(frozen=True)
class Positions:
    """How positions enter the model.

    Attributes:
        kind: ``rotary`` (q/k rotated by the HF rotary module; a partial rotary factor shows as
            cos/sin narrower than the head) or ``learned`` (an absolute position table added to
            the token embeddings).
        module: the rotary module or the position table, relative to the text model.
        offset: added to positions before the table lookup (OPT: 2).
        per_layer_type: the rotary module takes the layer type (Gemma 3: local/global bases).
        mrope: the rotary module takes 3-D (temporal, height, width) positions (Qwen-VL).
        half_width: the rotary module returns cos/sin once per frequency (half the rotated width, gpt-oss);
            they are repeated to the full width, which rotates the two halves of each head the same way.
    """

    kind: str = "rotary"
    module: str = "rotary_emb"
    offset: int = 0
    per_layer_type: bool = False
    mrope: bool = False
    half_width: bool = False


@dataclass(frozen=True)
class Attention:
    """The attention module of a layer.

    Attributes:
        module: attribute of the decoder layer.
        qkv: ``separate`` (one projection each, named by ``projections``) or ``fused`` (one
            projection whose output rows are q, then k, then v: Phi-3 ``qkv_proj``, GPT-2 ``c_attn``).
        projections: the q/k/v projection names (one name when fused).
        out: the output projection.
        qk_norm: per-head norms of queries and keys, applied when the module has them.
        sinks: the module's per-head attention-sink logits [H] (gpt-oss): one more softmax term per head
            that takes probability mass and adds no value; "" when the model has none.
    """

    module: str = "self_attn"
    qkv: str = "separate"
    projections: tuple[str, ...] = ("q_proj", "k_proj", "v_proj")
    out: str = "o_proj"
    qk_norm: tuple[str, str] = ("q_norm", "k_norm")
    sinks: str = ""


@dataclass(frozen=True)
class MLP:
    """The feed-forward part of a layer.

    Attributes:
        kind: ``module`` (the HF module is called as is: Llama/Gemma gated MLP), ``plain``
            (``down(act(up(x)))`` with biases: GPT-2, OPT, Phi) or ``fused_gated``
            (``down(act(gate) * up)`` from one ``gate_up`` projection: Phi-3).
        module: attribute of the decoder layer holding the projections ("" = the layer itself: OPT).
        projections: ``(up, down)`` for plain, ``(gate_up, down)`` for fused_gated.
        act: attribute holding the activation function.
        gated: three weight matrices (gate, up, down) rather than two (parameter count).
    """

    kind: str = "module"
    module: str = "mlp"
    projections: tuple[str, ...] = ()
    act: str = ""
    gated: bool = True


@dataclass(frozen=True)
class MoE:
    """A sparse mixture-of-experts block (``mlp.kind="moe"``), run by the ``npu.moe`` kernel.

    Layers whose MLP module has no ``experts`` attribute (Qwen2-MoE ``mlp_only_layers``) run their
    dense HF MLP as it is. The counts come from the config through ``DecoderAdapter.config``
    (normalised names ``num_experts``, ``experts_per_token``, ``moe_intermediate_size``,
    ``shared_expert_intermediate_size``, ``normalize_topk``, ``swiglu_alpha``, ``swiglu_limit``).
    The router's ``bias`` is added to its logits when the module has one (gpt-oss).

    Attributes:
        router: the router module (its ``weight`` [E, H] gives the router logits).
        experts: the experts module (``gate_up_proj`` [E, 2I, H], ``down_proj`` [E, H, I]).
        shared_expert / shared_gate: an MLP every token runs, scaled by ``sigmoid(shared_gate(x))``
            (Qwen2-MoE); "" when the model has none.
        normalize_topk: renormalise the top-k weights (Mixtral: always); None reads ``normalize_topk``
            from the config.
        weights_in_input_dtype: the routing weights are cast to the activations' dtype before the
            product (Qwen); Mixtral multiplies in float32.
        softmax_after_topk: route by the top-k logits, then a softmax over those k (gpt-oss); otherwise
            a softmax over every expert, then the top-k.
        transposed: the experts store ``gate_up_proj`` [E, H, 2I] and ``down_proj`` [E, I, H] (gpt-oss).
        interleaved: gate and up alternate in ``gate_up_proj``'s 2I features (gpt-oss) rather than
            being its two halves.
        biases: the experts' bias parameters (gate_up [E, 2I], down [E, H]); empty when they have none.
        clamped_swiglu: gpt-oss's clamped SwiGLU with the config's ``swiglu_alpha`` / ``swiglu_limit``
            instead of ``silu(gate) * up``.
    """

    router: str = "gate"
    experts: str = "experts"
    shared_expert: str = ""
    shared_gate: str = ""
    normalize_topk: bool | None = None
    weights_in_input_dtype: bool = True
    softmax_after_topk: bool = False
    transposed: bool = False
    interleaved: bool = False
    biases: tuple[str, ...] = ()
    clamped_swiglu: bool = False


@dataclass(frozen=True)
class DecoderAdapter:
    """How the shared static decoder reads one HF decoder architecture.

    Attributes:
        text_model: path from the ``*ForCausalLM`` to the text decoder (``model``, ``transformer``,
            ``model.decoder``, ``model.language_model``).
        embed / layers / final_norm: paths relative to the text model.
        lm_head: path of the logits projection from the ``*ForCausalLM``.
        positions / attention / mlp: see the classes above.
        moe: the mixture-of-experts block when ``mlp.kind == "moe"`` (see ``MoE``).
        linear: ``linear`` (``nn.Linear``, weight [out, in]) or ``conv1d`` (GPT-2 ``Conv1D``, weight [in, out]).
        block: ``pre_norm`` (x + attn(n0(x)); x + mlp(n1(x))), ``sandwich_norm`` (Gemma 2/3: norms before
            and after attention and MLP) or ``parallel`` (Phi: x + attn(n0(x)) + mlp(n0(x))).
        norms: the layer's norm modules in the order ``block`` uses them (HF modules, RMSNorm or LayerNorm).
        config: normalised field -> HF config attribute where the name differs (``intermediate_size``).
        config_defaults: normalised field -> (HF attribute it is a multiple of, factor) when the HF value is None.
        requires: HF config attribute -> the only value supported (refused otherwise, naming the knob).
        tp_plan: module pattern (relative to the text model, ``*`` = layer index) -> split style:
            ``colwise``, ``rowwise``, ``colwise_qkv`` (fused q/k/v rows, split per part),
            ``colwise_gate_up`` (fused gate/up rows, split per part) or ``replicate``.
    """

    text_model: str = "model"
    embed: str = "embed_tokens"
    layers: str = "layers"
    final_norm: str = "norm"
    lm_head: str = "lm_head"
    positions: Positions = Positions()
    attention: Attention = Attention()
    mlp: MLP = MLP()
    moe: MoE | None = None
    linear: str = "linear"
    block: str = "pre_norm"
    norms: tuple[str, ...] = ("input_layernorm", "post_attention_layernorm")
    config: dict[str, str] = field(default_factory=dict, hash=False)
    config_defaults: dict[str, tuple[str, int]] = field(default_factory=dict, hash=False)
    requires: dict[str, Any] = field(default_factory=dict, hash=False)
    tp_plan: dict[str, str] = field(default_factory=lambda: dict(LLAMA_TP_PLAN), hash=False)

    def __post_init__(self):
        values = {"positions.kind": self.positions.kind, "attention.qkv": self.attention.qkv,
                  "mlp.kind": self.mlp.kind, "linear": self.linear}
        for name, value in values.items():
            if value not in KINDS[name]:
                raise ValueError(f"adapter {name}={value!r} is not known; choose one of {list(KINDS[name])}")
        if (self.mlp.kind == "moe") != (self.moe is not None):
            raise ValueError("adapter mlp.kind='moe' and a moe=MoE(...) description go together")
        if BLOCKS.get(self.block) != len(self.norms):
            raise ValueError(f"adapter block={self.block!r} with norms={list(self.norms)}: the blocks and their norm "
                             f"counts are {BLOCKS}")

    def check_config(self, text_config, architecture: str) -> None:
        """Refuses an HF config using a variant this adapter does not describe."""
        for key, wanted in self.requires.items():
            value = getattr(text_config, key, wanted)
            if isinstance(wanted, str) and wanted.startswith("="):  # must equal another attribute
                wanted = getattr(text_config, wanted[1:])
            if value != wanted:
                raise ValueError(f"{architecture} with {key}={value!r} is not supported by optimum-npu (supported: "
                                 f"{key}={wanted!r}); use a checkpoint with {key}={wanted!r}")

    def config_value(self, text_config, name: str):
        """The HF config value of a normalised field (``intermediate_size``), by this adapter's attribute name."""
        value = getattr(text_config, self.config.get(name, name), None)
        if value is None and name in self.config_defaults:
            base, factor = self.config_defaults[name]
            value = factor * getattr(text_config, base)
        return value
