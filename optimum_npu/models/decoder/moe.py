"""The mixture-of-experts MLP of the static decoder: the HF sparse block's forward as one ``npu.moe`` node.

The router logits are a plain linear over the router's weight; routing, the experts and the weighted
combine are the ``npu.moe`` kernel (``device/kernels/moe.py``) over the HF experts' stacked weights;
a shared expert (Qwen2-MoE) runs as its HF module, scaled by ``sigmoid(shared_gate(x))``. Layers whose
MLP has no experts (Qwen2-MoE ``mlp_only_layers``) run their dense HF MLP as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

import optimum_npu.device.kernels  # noqa: F401  (registers torch.ops.npu.moe)
from optimum_npu.models.adapters.spec import MoE


@dataclass(frozen=True)
class MoERouting:
    """The adapter's MoE layout (in the layer's ``module``) with the routing facts of the model config."""

    module: str
    layout: MoE
    top_k: int
    normalize: bool
    swiglu_alpha: float = 1.0
    swiglu_limit: float = 0.0   # 0: silu(gate) * up


def moe_mlp(layer: nn.Module, spec: MoERouting, linear: str, hidden: torch.Tensor) -> torch.Tensor:
    """[B, S, E] -> [B, S, E]: routed experts plus the shared expert when the model has one."""
    block = getattr(layer, spec.module)
    layout = spec.layout
    if not hasattr(block, layout.experts):  # a dense layer of a mixed model
        return block(hidden)
    flat = hidden.reshape(-1, hidden.shape[-1])                                           # [T, E]
    router = getattr(block, layout.router)
    router_logits = nn.functional.linear(flat, router.weight, getattr(router, "bias", None))   # [T, X]
    experts = getattr(block, layout.experts)
    gate_up, down = experts.gate_up_proj, experts.down_proj                               # [X, 2I, E], [X, E, I]
    if layout.transposed:                                                                  # stored [X, E, 2I], [X, I, E]
        gate_up, down = gate_up.transpose(1, 2), down.transpose(1, 2)
    extras = {}
    if layout.biases:
        extras.update(zip(("gate_up_bias", "down_bias"), (getattr(experts, name) for name in layout.biases)))
    if layout.softmax_after_topk:
        extras["softmax_after_topk"] = True
    if layout.interleaved:
        extras["interleaved"] = True
    if layout.clamped_swiglu:
        extras.update(swiglu_alpha=spec.swiglu_alpha, swiglu_limit=spec.swiglu_limit)
    out = torch.ops.npu.moe(flat, router_logits, gate_up, down, spec.top_k, spec.normalize,
                            layout.weights_in_input_dtype, **extras)                       # [T, E]
    if layout.shared_expert:
        shared = getattr(block, layout.shared_expert)(flat)                               # [T, E]
        out = out + torch.sigmoid(getattr(block, layout.shared_gate)(flat)) * shared
    return out.view(hidden.shape)
