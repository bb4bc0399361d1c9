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


def moe_mlp(layer: nn.Module, spec: MoERouting, linear: str, hidden: torch.Tensor) -> torch.Tensor:
    """[B, S, E] -> [B, S, E]: routed experts plus the shared expert when the model has one."""
    block = getattr(layer, spec.module)
    layout = spec.layout
    if not hasattr(block, layout.experts):  # a dense layer of a mixed model
        return block(hidden)
    flat = hidden.reshape(-1, hidden.shape[-1])                                           # [T, E]
    router_logits = nn.functional.linear(flat, getattr(block, layout.router).weight)      # [T, X]
    experts = getattr(block, layout.experts)
    out = torch.ops.npu.moe(flat, router_logits, experts.gate_up_proj, experts.down_proj, spec.top_k,
                            spec.normalize, layout.weights_in_input_dtype)                 # [T, E]
    if layout.shared_expert:
        shared = getattr(block, layout.shared_expert)(flat)                               # [T, E]
        out = out + torch.sigmoid(getattr(block, layout.shared_gate)(flat)) * shared
    return out.view(hidden.shape)
