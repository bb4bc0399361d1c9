"""Buckets as data: each compiled graph says what it is in ``Graph.attributes``.

``{"kind": "prefill" | "decode" | "visual" | ..., "batch": rows, "tokens": tokens per row}``, written at
export. Runtimes, stats and reports select graphs by these fields, never by parsing graph names.
"""

from __future__ import annotations

from dataclasses import dataclass

from optimum_npu.schema import Graph, GraphFormatError

#: The attribute keys every bucket graph carries.
BUCKET_KEYS = ("kind", "batch", "tokens")


@dataclass(frozen=True)
class Bucket:
    """One compiled graph's static shape: ``batch`` rows of ``tokens`` tokens, for phase ``kind``."""

    name: str
    kind: str
    batch: int
    tokens: int

    def attributes(self) -> dict:
        """The ``Graph.attributes`` entries that describe this bucket."""
        return {"kind": self.kind, "batch": self.batch, "tokens": self.tokens}


def bucket_of(graph: Graph) -> Bucket:
    """The bucket a graph's attributes describe.

    Raises:
        GraphFormatError: the attributes do not name a kind and positive batch and token counts.
    """
    attrs = graph.attributes
    kind, batch, tokens = (attrs.get(key) for key in BUCKET_KEYS)
    if not isinstance(kind, str) or not kind.isidentifier() or any(
            not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in (batch, tokens)):
        raise GraphFormatError(f"graph {graph.name!r} does not describe its bucket: its attributes need "
                               f"'kind' (a name), 'batch' and 'tokens' (integers >= 1); recompile the model")
    return Bucket(graph.name, kind, batch, tokens)


def buckets_of_kind(graphs: dict[str, Graph], kind: str) -> list[Bucket]:
    """The buckets of one kind, smallest first (by batch, then tokens)."""
    found = [bucket_of(graph) for graph in graphs.values()]
    return sorted((b for b in found if b.kind == kind), key=lambda b: (b.batch, b.tokens))


def smallest_bucket(buckets: list[Bucket], batch: int = 1, tokens: int = 1) -> Bucket | None:
    """The smallest bucket that holds ``batch`` rows of ``tokens`` tokens (None when none does)."""
    fitting = [b for b in buckets if b.batch >= batch and b.tokens >= tokens]
    return min(fitting, key=lambda b: (b.batch * b.tokens, b.batch), default=None)
