"""Routing figures of a mixture-of-experts model's calls: experts activated and load imbalance.

Every MoE kernel call records ``(E, counts)``: the model's experts per layer E and the tokens routed
to each expert the rank holds (all E when the experts are replicated, E / n under expert
parallelism, ``device/kernels/moe.py``). The rows of a static graph are all routed, padding rows
included, as the device runs them. Under expert parallelism in one process the n ranks of a layer
record one after the other; with ``collectives="torch.distributed"`` a process sees its own rank only,
so the activated experts are its share scaled by n and the imbalance is unknown (None).
"""

from __future__ import annotations

Routing = tuple[tuple[int, tuple[int, ...]], ...]


def experts_activated(routing: Routing) -> float | None:
    """Mean over the MoE layers of one call of the experts that received at least one token (None: no MoE)."""
    if not routing:
        return None
    activated = sum(sum(1 for count in counts if count) for _, counts in routing)
    held = sum(len(counts) for _, counts in routing)
    return activated * routing[0][0] / held


def load_imbalance(routing: Routing) -> float | None:
    """Mean over the MoE layers of one call of max / mean tokens per device (1.0 = balanced), under expert
    parallelism with every rank in this process; None otherwise."""
    if not routing:
        return None
    experts, counts = routing[0]
    ranks = experts // len(counts)
    if ranks == 1 or len(routing) % ranks:
        return None
    ratios = []
    for start in range(0, len(routing), ranks):
        per_device = [sum(counts) for _, counts in routing[start:start + ranks]]
        mean = sum(per_device) / ranks
        ratios.append(max(per_device) / mean if mean else 1.0)
    return sum(ratios) / len(ratios)


def mean_of(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None
