"""Mixture-of-experts feed-forward: ``torch.ops.npu.moe``.

From the router logits of each token the kernel picks its ``top_k`` experts, runs each expert's
gated MLP (``down(silu(gate(x)) * up(x))``) over the tokens routed to it and sums the outputs
weighted by the routing weights. Routing is Transformers' softmax-then-top-k (Mixtral, Qwen2-MoE,
Qwen3-MoE): probabilities in float32, ``torch.topk`` (same tie-breaking), the top-k weights
renormalised to sum to 1 when ``normalize`` is set, and cast to the activations' dtype before the
product when ``weights_in_input_dtype`` is set (Qwen; Mixtral multiplies in float32). Experts run
in ascending index order and accumulate with ``index_add_``, as the HF experts module does, so the
result is the same to the bit.

Expert weights are stored as in the HF checkpoints: ``gate_up`` [E, 2I, H] (gate rows, then up rows)
and ``down`` [E, H, I]. Only the experts some token picked are read; which ones depends on the data,
so the cost model prices the expected number (``device/moe_cost.py``).
"""

from __future__ import annotations

import torch
from torch.library import custom_op


def route(router_logits: torch.Tensor, top_k: int, normalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """router_logits [T, E] -> (weights [T, k] float32, experts [T, k] int64), softmax then top-k."""
    probs = torch.softmax(router_logits, dim=-1, dtype=torch.float32)       # [T, E]
    weights, experts = torch.topk(probs, top_k, dim=-1)                      # [T, k]
    if normalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, experts


def moe_kernel(hidden: torch.Tensor, router_logits: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor,
               top_k: int, normalize: bool, weights_in_input_dtype: bool) -> torch.Tensor:
    """hidden [T, H]; router_logits [T, E]; gate_up [E, 2I, H]; down [E, H, I] -> [T, H]."""
    weights, experts = route(router_logits, top_k, normalize)
    if weights_in_input_dtype:
        weights = weights.to(router_logits.dtype)
    out = torch.zeros_like(hidden)                                           # [T, H]
    by_expert = experts.transpose(0, 1)                                      # [k, T]
    for expert in torch.unique(experts).tolist():                            # ascending, as HF
        slot, token = torch.where(by_expert == expert)                       # [n], [n]
        gate, up = torch.nn.functional.linear(hidden[token], gate_up[expert]).chunk(2, dim=-1)   # [n, I] each
        expert_out = torch.nn.functional.linear(torch.nn.functional.silu(gate) * up, down[expert])  # [n, H]
        out.index_add_(0, token, (expert_out * weights[token, slot, None]).to(out.dtype))
    return out


moe = custom_op("npu::moe", moe_kernel, mutates_args=())


@moe.register_fake
def _moe_fake(hidden, router_logits, gate_up, down, top_k, normalize, weights_in_input_dtype):
    return torch.empty_like(hidden)
