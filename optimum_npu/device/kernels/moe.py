"""Mixture-of-experts feed-forward: ``torch.ops.npu.moe`` and its expert-parallel pieces.

From the router logits of each token ``npu.moe`` picks its ``top_k`` experts, runs each expert's
gated MLP (``down(silu(gate(x)) * up(x))``) over the tokens routed to it and sums the outputs
weighted by the routing weights. Routing is Transformers' softmax-then-top-k (Mixtral, Qwen2-MoE,
Qwen3-MoE): probabilities in float32, ``torch.topk`` (same tie-breaking), the top-k weights
renormalised to sum to 1 when ``normalize`` is set, and cast to the activations' dtype before the
product when ``weights_in_input_dtype`` is set (Qwen; Mixtral multiplies in float32). gpt-oss routes
top-k-then-softmax (``softmax_after_topk``) and its experts have biases, gate/up rows interleaved and a
clamped SwiGLU (``expert_mlp``). Experts run in ascending index order and accumulate with ``index_add_``,
as the HF experts module does.

Expert weights are read as ``gate_up`` [E, 2I, H] (gate rows, then up rows; alternating when
``interleaved``) and ``down`` [E, H, I]: the HF checkpoints' tensors, or a transposed view of them
(gpt-oss stores [E, H, 2I] and [E, I, H]). Only the experts some token picked are read; which ones depends on the data,
so the cost model prices the expected number (``device/moe_cost.py``).

Under expert parallelism (``compile/expert_parallel.py``) the same arithmetic is split in three:
``npu.moe_dispatch`` (a collective, ``kernels/collectives.py``) routes each rank's share of the tokens
and sends them to the ranks holding their experts, ``npu.moe_experts`` runs a rank's experts over
what it received (``expert_weights`` gives each row's weight per local expert, 0 = not routed there),
and ``npu.all_to_all`` sends the results back.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch.library import custom_op

from optimum_npu.device.kernels.quantized_linear import dequantize_weight

#: Where ``moe_experts_kernel`` records, per call, (the model's experts, tokens routed to each held expert).
_ROUTING_LOG: ContextVar[list | None] = ContextVar("npu_moe_routing_log", default=None)


@contextmanager
def record_routing():
    """Collects the routing of every MoE kernel run inside the block (in this thread): yields a list that fills
    with ``(num_experts, (tokens routed to each expert the rank holds, ...))`` per kernel call, in run order."""
    log: list = []
    token = _ROUTING_LOG.set(log)
    try:
        yield log
    finally:
        _ROUTING_LOG.reset(token)


def route(router_logits: torch.Tensor, top_k: int, normalize: bool, weights_in_input_dtype: bool,
          softmax_after_topk: bool = False) -> torch.Tensor:
    """router_logits [T, E] -> the routing weight of every (token, expert) [T, E], 0 where not picked.

    ``softmax_after_topk`` (gpt-oss): the top-k of the logits, then a softmax over those k in the logits' dtype.
    """
    if softmax_after_topk:
        values, experts = torch.topk(router_logits, top_k, dim=-1)                   # [T, k]
        weights = torch.softmax(values, dim=-1, dtype=values.dtype)
        return torch.zeros_like(router_logits).scatter_(1, experts, weights)
    probs = torch.softmax(router_logits, dim=-1, dtype=torch.float32)       # [T, E]
    weights, experts = torch.topk(probs, top_k, dim=-1)                      # [T, k]
    if normalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    if weights_in_input_dtype:
        weights = weights.to(router_logits.dtype)
    return torch.zeros_like(probs, dtype=weights.dtype).scatter_(1, experts, weights)


def expert_mlp(x: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor, gate_up_bias: torch.Tensor | None,
               down_bias: torch.Tensor | None, interleaved: bool, swiglu_alpha: float,
               swiglu_limit: float) -> torch.Tensor:
    """One expert: x [n, H]; gate_up [2I, H]; down [H, I]; biases [2I] / [H] -> [n, H].

    Gate and up are the two halves of ``gate_up``'s rows, or its even and odd rows when ``interleaved``
    (gpt-oss). ``swiglu_limit`` > 0 selects gpt-oss's clamped SwiGLU, ``(clamp(up) + 1) * g * sigmoid(alpha * g)``
    with ``g = min(gate, limit)`` and up clamped to ±limit; otherwise ``silu(gate) * up`` (Mixtral, Qwen).
    """
    states = torch.nn.functional.linear(x, gate_up)                                  # [n, 2I]
    if gate_up_bias is not None:
        states = states + gate_up_bias
    gate, up = (states[..., ::2], states[..., 1::2]) if interleaved else states.chunk(2, dim=-1)   # [n, I] each
    if swiglu_limit > 0:
        gate = gate.clamp(min=None, max=swiglu_limit)
        up = up.clamp(min=-swiglu_limit, max=swiglu_limit)
        activated = (up + 1) * (gate * torch.sigmoid(gate * swiglu_alpha))
    else:
        activated = torch.nn.functional.silu(gate) * up
    out = torch.nn.functional.linear(activated, down)                                # [n, H]
    return out if down_bias is None else out + down_bias


def _expert_weight(values: torch.Tensor, scale: torch.Tensor | None, expert: int, dtype: torch.dtype) -> torch.Tensor:
    """One expert's weight [out, in]: the stored tensor, or its quantized values dequantised with its scales."""
    return values[expert] if scale is None else dequantize_weight(values[expert], scale[expert], dtype)


def moe_experts_kernel(tokens: torch.Tensor, expert_weights: torch.Tensor, gate_up: torch.Tensor,
                       down: torch.Tensor, top_k: int, num_experts: int, gate_up_bias: torch.Tensor | None = None,
                       down_bias: torch.Tensor | None = None, interleaved: bool = False, swiglu_alpha: float = 1.0,
                       swiglu_limit: float = 0.0, gate_up_scale: torch.Tensor | None = None,
                       down_scale: torch.Tensor | None = None) -> torch.Tensor:
    """tokens [N, H]; expert_weights [N, X] (X local experts); gate_up [X, 2I, H]; down [X, H, I];
    biases [X, 2I] / [X, H] -> [N, H]. The expert function is ``expert_mlp``'s. With ``gate_up_scale`` /
    ``down_scale`` ([X, 2I, H / G] / [X, H, I / G]) the weights are quantized values (int8, packed int4 [.., in / 2]
    or fp8, ``kernels/quantized_linear.py``), dequantised per expert in the tokens' dtype.

    ``top_k`` and ``num_experts`` (the model's, over all ranks) are routing facts for the cost model.
    """
    out = torch.zeros_like(tokens)                                           # [N, H]
    routed = expert_weights != 0                                             # [N, X]
    if (log := _ROUTING_LOG.get()) is not None:
        log.append((num_experts, tuple(routed.sum(dim=0).tolist())))
    for expert in routed.any(dim=0).nonzero()[:, 0].tolist():               # ascending, as HF
        rows = routed[:, expert].nonzero()[:, 0]                             # [n]
        expert_out = expert_mlp(tokens[rows], _expert_weight(gate_up, gate_up_scale, expert, tokens.dtype),
                                _expert_weight(down, down_scale, expert, tokens.dtype),
                                None if gate_up_bias is None else gate_up_bias[expert],
                                None if down_bias is None else down_bias[expert],
                                interleaved, swiglu_alpha, swiglu_limit)    # [n, H]
        out.index_add_(0, rows, (expert_out * expert_weights[rows, expert, None]).to(out.dtype))
    return out


def moe_kernel(hidden: torch.Tensor, router_logits: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor,
               top_k: int, normalize: bool, weights_in_input_dtype: bool, gate_up_bias: torch.Tensor | None = None,
               down_bias: torch.Tensor | None = None, softmax_after_topk: bool = False, interleaved: bool = False,
               swiglu_alpha: float = 1.0, swiglu_limit: float = 0.0, gate_up_scale: torch.Tensor | None = None,
               down_scale: torch.Tensor | None = None) -> torch.Tensor:
    """hidden [T, H]; router_logits [T, E]; gate_up [E, 2I, H]; down [E, H, I]; biases [E, 2I] / [E, H];
    scales of quantized weights (see ``moe_experts_kernel``) -> [T, H]."""
    weights = route(router_logits, top_k, normalize, weights_in_input_dtype, softmax_after_topk)   # [T, E]
    return moe_experts_kernel(hidden, weights, gate_up, down, top_k, router_logits.shape[-1], gate_up_bias,
                              down_bias, interleaved, swiglu_alpha, swiglu_limit, gate_up_scale, down_scale)


def dispatch_buffers(hidden: torch.Tensor, router_logits: torch.Tensor, top_k: int, normalize: bool,
                     weights_in_input_dtype: bool, rank: int, size: int,
                     softmax_after_topk: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """What rank ``rank`` of ``size`` sends: its share of the tokens [size, C, H] (C = ceil(T / size): rank r
    routes tokens r*C .. (r+1)*C - 1) and their weights per destination's experts [size, C, E / size]
    (experts are placed contiguously: rank d holds d*E/size ..). Rows past T are zero."""
    tokens, hidden_size = hidden.shape
    experts = router_logits.shape[-1]
    share = -(-tokens // size)
    own = slice(rank * share, min((rank + 1) * share, tokens))
    weights = route(router_logits[own], top_k, normalize, weights_in_input_dtype, softmax_after_topk)  # [c, E]
    count = weights.shape[0]
    send_tokens = hidden.new_zeros(size, share, hidden_size)                           # [n, C, H]
    send_tokens[:, :count] = hidden[own]
    send_weights = weights.new_zeros(size, share, experts // size)                     # [n, C, E/n]
    send_weights[:, :count] = weights.view(count, size, experts // size).transpose(0, 1)
    return send_tokens, send_weights


def dispatch_shapes(hidden: torch.Tensor, router_logits: torch.Tensor, weights_in_input_dtype: bool,
                    size: int, softmax_after_topk: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Empty tensors shaped like one rank's received tokens [n, C, H] and weights [n, C, E/n]."""
    share = -(-hidden.shape[0] // size)
    dtype = router_logits.dtype if weights_in_input_dtype or softmax_after_topk else torch.float32
    return (hidden.new_empty(size, share, hidden.shape[1]),
            router_logits.new_empty(size, share, router_logits.shape[-1] // size, dtype=dtype))


def _in_features(weight: torch.Tensor, scale: torch.Tensor | None) -> int:
    """Input features of stacked expert weights [X, out, in] (packed int4 [X, out, in / 2]); -1 when ``scale`` does
    not fit them ([X, out, in / G], or quantized values without a scale)."""
    quantized = weight.dtype in (torch.int8, torch.uint8, torch.float8_e4m3fn)
    features = weight.shape[-1] * (2 if weight.dtype == torch.uint8 else 1)
    if quantized != (scale is not None):
        return -1
    if scale is not None and (scale.dim() != 3 or list(scale.shape[:2]) != list(weight.shape[:2])
                              or scale.shape[2] < 1 or features % scale.shape[2]):
        return -1
    return features


def check_experts(hidden: torch.Tensor, routing: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor,
                  top_k: int, num_experts: int, gate_up_bias: torch.Tensor | None = None,
                  down_bias: torch.Tensor | None = None, gate_up_scale: torch.Tensor | None = None,
                  down_scale: torch.Tensor | None = None) -> None:
    """Refuses (ValueError) shapes and routing facts that do not fit together; the fake implementations call it,
    so a graph read from an artifact is checked when its shapes are verified, before it is costed or run."""
    held, hidden_size = gate_up.shape[0], hidden.shape[-1]
    consistent = (gate_up.dim() == 3 and down.dim() == 3 and down.shape[0] == held
                  and _in_features(gate_up, gate_up_scale) == hidden_size
                  and down.shape[1] == hidden_size and 2 * _in_features(down, down_scale) == gate_up.shape[1]
                  and routing.shape[-1] == held and routing.shape[0] == hidden.shape[0]
                  and (gate_up_bias is None or list(gate_up_bias.shape) == [held, gate_up.shape[1]])
                  and (down_bias is None or list(down_bias.shape) == [held, hidden_size]))
    if not consistent or not 1 <= top_k <= num_experts or held < 1 or num_experts % held:
        raise ValueError(f"MoE kernel arguments do not fit: tokens {list(hidden.shape)}, routing {list(routing.shape)},"
                         f" gate_up {list(gate_up.shape)}, down {list(down.shape)}, top_k={top_k}, "
                         f"num_experts={num_experts}")


moe = custom_op("npu::moe", moe_kernel, mutates_args=())
moe_experts = custom_op("npu::moe_experts", moe_experts_kernel, mutates_args=())


@moe.register_fake
def _moe_fake(hidden, router_logits, gate_up, down, top_k, normalize, weights_in_input_dtype, gate_up_bias=None,
              down_bias=None, softmax_after_topk=False, interleaved=False, swiglu_alpha=1.0, swiglu_limit=0.0,
              gate_up_scale=None, down_scale=None):
    check_experts(hidden, router_logits, gate_up, down, top_k, router_logits.shape[-1], gate_up_bias, down_bias,
                  gate_up_scale, down_scale)
    return torch.empty_like(hidden)


@moe_experts.register_fake
def _moe_experts_fake(tokens, expert_weights, gate_up, down, top_k, num_experts, gate_up_bias=None, down_bias=None,
                      interleaved=False, swiglu_alpha=1.0, swiglu_limit=0.0, gate_up_scale=None, down_scale=None):
    check_experts(tokens, expert_weights, gate_up, down, top_k, num_experts, gate_up_bias, down_bias, gate_up_scale,
                  down_scale)
    return torch.empty_like(tokens)
