"""Cost of the mixture-of-experts kernels (``npu.moe``, ``npu.moe_experts``) from static shapes.

Which experts a batch activates depends on the data, and the compiled graph's cost is static, so the
cost model prices the expectation under uniform routing: each of T tokens picks k of E experts, so an
expert is untouched with probability (1 - k/E)^T and the batch activates on average
``E * (1 - (1 - k/E)^T)`` experts (the union over its tokens). Only those experts' weights are read:
a decode step of one token reads k experts, a batch of 16 tokens on Mixtral (k=2, E=8) reads 7.2 of 8
on average and a 2048-token prefill all of them, so ms/token grows with the batch as it does on real
hardware. A rank holding X of the E experts (expert parallelism) reads ``X * (1 - (1 - k/E)^T)`` of
them and computes its share ``T * k * X / E`` of the token-expert rows. The rows of a static graph are
all counted, padding included (the kernel routes every row). Real routing is skewed; the expectation
is a floor on the experts read, documented in docs/moe.md.
"""

from __future__ import annotations

from typing import Callable

from optimum_npu.device.kernels import MOE
from optimum_npu.device.ops import GEMV_MAX_ROWS, argument, nbytes
from optimum_npu.schema import Node


def expected_active_experts(tokens: int, experts: int, top_k: int, held: int | None = None) -> float:
    """Expected number of the ``held`` experts (default: all ``experts``) that ``tokens`` tokens activate."""
    held = experts if held is None else held
    return held * (1.0 - (1.0 - top_k / experts) ** tokens)


def moe_cost(node: Node, arg_shape: Callable[[Node, str], tuple[list[int], str]]) -> tuple[float, float, str]:
    """(flops, DRAM bytes, op class) of an ``npu.moe`` or ``npu.moe_experts`` node.

    ``arg_shape(node, name)`` gives the (shape, dtype) of the node's schema argument ``name``.
    """
    moe = node.op == MOE
    (tokens, hidden), act_dtype = arg_shape(node, "hidden" if moe else "tokens")
    routing_shape, routing_dtype = arg_shape(node, "router_logits" if moe else "expert_weights")
    (held, *gate_up_rest), weight_dtype = arg_shape(node, "gate_up")
    (_, *down_rest), _ = arg_shape(node, "down")
    experts = routing_shape[-1] if moe else argument(node, "num_experts")
    top_k = argument(node, "top_k")
    intermediate = gate_up_rest[0] // 2
    rows = tokens * top_k * held / experts                                  # token-expert pairs on this device
    active = expected_active_experts(tokens, experts, top_k, held)
    per_expert = nbytes(gate_up_rest, weight_dtype) + nbytes(down_rest, weight_dtype)
    for extra in ("gate_up_bias", "down_bias", "gate_up_scale", "down_scale"):   # gpt-oss biases, quantized scales
        if argument(node, extra) is not None:
            (_, *extra_rest), extra_dtype = arg_shape(node, extra)
            per_expert += nbytes(extra_rest, extra_dtype)
    weight_bytes = active * per_expert
    moved = weight_bytes + 2 * nbytes([tokens, hidden], act_dtype) + nbytes(routing_shape, routing_dtype)
    kind = "gemv" if rows / max(active, 1.0) <= GEMV_MAX_ROWS else "gemm"
    return 6.0 * rows * hidden * intermediate, float(moved), kind


def all_to_all_seconds(output_bytes: int, size: int, link_bandwidth: float, latency: float) -> tuple[float, float]:
    """(transfer, sync) seconds of an all-to-all of ``output_bytes`` per rank: (n-1)/n of it crosses the link,
    one exchange per peer: ``(n-1)/n * bytes / link_bandwidth`` + ``(n-1) * link_latency``."""
    return (size - 1) / size * output_bytes / link_bandwidth, (size - 1) * latency


def output_bytes(node: Node) -> int:
    """Bytes of a node's output(s) from its ``meta`` (a tuple's parts added)."""
    parts = node.meta.get("tuple", [node.meta])
    return sum(nbytes(part["shape"], part["dtype"]) for part in parts if "shape" in part)


__all__ = ["all_to_all_seconds", "expected_active_experts", "moe_cost", "output_bytes"]
