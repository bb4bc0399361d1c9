"""Linear weights packed once, at load, into the CPU BLAS's own layout (oneDNN), for the device's linear kernel.

A decode step multiplies a few rows by every weight matrix, so its host time is the time to stream
the weights from memory. A general matrix product packs (re-lays) the weight operand into the
BLAS's blocked layout on every call, which reads and writes the weight again; a weight packed once
at load is only read. Measured on the development CPU (one thread, the 76M benchmark model's 84
layer matrices in sequence, 288 MiB, cold in cache; ``docs/benchmarks.md``): at 4 rows ``F.linear``
8.0 GB/s, the packed product 12.8 GB/s; at 8 rows 6.1 against 12.1; at 128 rows (a prefill chunk)
1.1 against 1.5. At one row both stream alike (a batch-1 generate() of that model: 1.01x, within
noise). Rounding differs from ``F.linear``'s by about 1e-6 relative (fp32).

Only fp32 matrices of at least ``PACK_MIN_BYTES`` that every graph reads as a linear's weight operand
and nothing else are packed (an embedding tied to the output projection stays plain). The packed
tensor replaces the plain one in the engine's bindings, so the engine holds one copy; packing is
skipped when the copies would take more than the room the engine gives (half of the host's available
memory: while loading, a weight exists in both layouts). The simulated figures do not depend on it.
``OPTIMUM_NPU_PACKED_LINEAR=0`` keeps every weight plain (an A/B switch, and a fallback should a CPU's
oneDNN build refuse a shape).
"""

from __future__ import annotations

import math
import os

import torch

from optimum_npu.schema import Graph, TensorSpec, iter_refs, ref_name

#: Environment variable: ``0`` / ``false`` / ``off`` / ``no`` keeps linear weights in their plain layout.
PACKED_LINEAR_ENV = "OPTIMUM_NPU_PACKED_LINEAR"
#: The row count the packed layout is chosen for (a decode batch); it serves every row count.
PACK_ROWS_HINT = 4
#: Smaller weights stay plain: oneDNN costs ~12 us per call, the time ``F.linear`` takes for 4 rows of a
#: [128, 256] matrix in cache. Above it, packing pays in a model's run even where one matrix in cache says
#: otherwise: the 3M demo model's weights (128 KiB - 704 KiB; [256, 256] in cache: 12.5 us by ``F.linear``,
#: 21.5 us packed) gave batch-4 generate() 1.20x faster packed, all of its matrices read from L3 in turn.
PACK_MIN_BYTES = 64 * 1024
_LINEAR = "aten.linear.default"


def packing_enabled() -> bool:
    """Whether new engines pack linear weights: oneDNN is present and ``OPTIMUM_NPU_PACKED_LINEAR`` is not off."""
    if os.environ.get(PACKED_LINEAR_ENV, "1").strip().lower() in ("0", "false", "off", "no"):
        return False
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


class LinearPacking:
    """Which linear weights of a rank's graphs are bound packed, and their packed copies.

    A weight is packed when every graph reads it only as the weight operand of ``aten.linear`` and it is
    an fp32 matrix of at least ``PACK_MIN_BYTES``. ``room`` (bytes) bounds the packed copies' total
    (``copies`` of each graph-shaped weight: the ranks of a tensor-parallel group): a model whose copies
    would not fit keeps every weight plain.
    """

    def __init__(self, graphs: dict[str, Graph], room: int | None, copies: int = 1):
        chosen: dict[str, int] = {}                      # weight source -> its bytes
        refused: set[str] = set()
        for graph in graphs.values():
            chosen_here, refused_here = _linear_only_weights(graph)
            chosen.update(chosen_here)
            refused |= refused_here
        #: the weight sources bound packed (in every graph that reads them)
        self.sources = set(chosen) - refused
        self.nbytes = sum(chosen[source] for source in self.sources) * copies
        if room is not None and self.nbytes > room:
            self.sources = set()
        self.packed: dict[str, torch.Tensor] = {}

    def pack(self, weights: dict[str, torch.Tensor], leave: set[str] = frozenset()) -> None:
        """Packs this rank's copies of the chosen weights (one per distinct tensor) but those in ``leave`` (the
        ones a rank reads through a merged product, ``linear_merging``)."""
        by_tensor: dict[int, torch.Tensor] = {}
        for source in self.sources - leave:
            tensor = weights.get(source)
            if tensor is None or tensor.dtype != torch.float32 or tensor.dim() != 2 or tensor.device.type != "cpu":
                continue
            if id(tensor) not in by_tensor:
                by_tensor[id(tensor)] = pack_matrix(tensor)
            self.packed[source] = by_tensor[id(tensor)]

    def chosen(self, spec: TensorSpec) -> bool:
        """Whether graph input ``spec`` is a weight bound packed."""
        return spec.kind == "weight" and spec.source in self.sources

    def bound(self, spec: TensorSpec) -> torch.Tensor | None:
        """The packed tensor bound to graph input ``spec``, or None (plain)."""
        return self.packed.get(spec.source) if self.chosen(spec) else None


def _linear_only_weights(graph: Graph) -> tuple[dict[str, int], set[str]]:
    """The weight sources of ``graph`` that are fp32 matrices of ``PACK_MIN_BYTES`` or more read only as linear
    weights (with their bytes); and the sources it reads otherwise (or holds in another dtype or rank)."""
    source_of = {spec.name: spec.source for spec in graph.inputs if spec.kind == "weight"}
    refused = {spec.source for spec in graph.inputs
               if spec.kind == "weight" and (spec.dtype != "float32" or len(spec.shape) != 2)}
    for node in graph.nodes:
        refs = iter_refs(node.args) + iter_refs(node.kwargs)
        operand = ref_name(node.args[1]) if node.op == _LINEAR and len(node.args) > 1 else None   # the weight
        for ref in refs:
            if ref in source_of and (ref != operand or refs.count(ref) > 1):
                refused.add(source_of[ref])
    chosen = {spec.source: math.prod(spec.shape) * 4 for spec in graph.inputs
              if spec.kind == "weight" and spec.source not in refused and math.prod(spec.shape) * 4 >= PACK_MIN_BYTES}
    return chosen, refused


def pack_matrix(weight: torch.Tensor) -> torch.Tensor:
    """A packed copy of an fp32 matrix [N, K] (a oneDNN-layout tensor of the same shape)."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), PACK_ROWS_HINT)


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x [..., K] fp32; weight packed [N, K]; bias [N] -> [..., N] contiguous: oneDNN's product. Inputs it cannot
    take (another dtype or inner size) go through ``F.linear`` on the plain weight, with its values and errors."""
    if x.dtype is not torch.float32 or x.shape[-1] != weight.shape[1] or (
            bias is not None and bias.dtype is not torch.float32):
        return torch.nn.functional.linear(x, weight.to_dense(), bias)
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
