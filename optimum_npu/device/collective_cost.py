"""Cost of the collectives inserted by the tensor- and expert-parallel passes, on the device link.

Ring all-reduce: ``2(n-1)/n * bytes / link_bandwidth`` + ``2(n-1) * link_latency``;
all-gather: ``(n-1)/n * bytes_out / link_bandwidth`` + ``(n-1) * link_latency``;
all-to-all (expert-parallel dispatch and combine): see ``moe_cost.all_to_all_seconds``.
"""

from __future__ import annotations

from optimum_npu.device.moe_cost import all_to_all_seconds, output_bytes
from optimum_npu.device.ops import ALL_REDUCE, argument, nbytes
from optimum_npu.device.spec import NPUSpec
from optimum_npu.schema import ALL_TO_ALL, MOE_DISPATCH, Node

__all__ = ["collective_seconds"]


def collective_seconds(node: Node, spec: NPUSpec) -> tuple[float, float]:
    """(transfer, sync) seconds of a collective over ``group_size`` devices, from its output shape."""
    n = argument(node, "group_size", 1)
    if node.op in (ALL_TO_ALL, MOE_DISPATCH):
        return all_to_all_seconds(output_bytes(node), n, spec.link_bandwidth, spec.link_latency_s) if n > 1 else (
            0.0, 0.0)
    if n <= 1 or "shape" not in node.meta:
        return 0.0, 0.0
    size = nbytes(node.meta["shape"], node.meta["dtype"])
    steps = 2 * (n - 1) if node.op == ALL_REDUCE else n - 1
    return steps / n * size / spec.link_bandwidth, steps * spec.link_latency_s
