"""The one compile pipeline: an ordered list of passes over the captured graphs.

Export, the meta-device estimate and the capacity planner all run these passes, in this
order, on graphs captured by a family's graph builder:

1. ``capture``: the family's builder traces its static-shape wrapper once per bucket
   (``compile/capture.py``); on a ``meta`` model it yields the same graphs without weights.
2. ``quantize``: with a ``quantization`` knob that quantizes weights, linear weights become quantized
   tensors + scales and linears ``npu.quantized_linear`` (``compile/quantize.py``), before fusion and
   sharding see them; with ``kv_cache="fp8"`` the caches become fp8 inputs with scales that the attention
   kernels write and read (``compile/quantize_kv.py``); without the knob the graphs pass unchanged.
3. ``fuse``: finds the fusion candidates of each graph (``device/fusion.py``: RMSNorm, rotary,
   gated MLP, attention). Sharding keeps node names, so the candidates hold for the sharded
   graphs; the cost models take them (whether a group fits in SRAM is decided per device).
4. ``shard``: splits the graphs and weights for tensor parallelism (``compile/tensor_parallel.py``) and,
   with ``expert_parallel_size``, spreads the experts (``compile/expert_parallel.py``: all-to-all dispatch
   and combine around each rank's experts).
5. ``shape propagation``: node shapes of every graph a pass rewrote are recomputed on fake
   tensors (``compile/shape_prop.py``), so the memory plan and the cost model read true shapes.
6. ``memory plan``: the bytes one device needs, per category and per weight dtype, from the
   final graphs (``device/sizing.py``): the figures the planner reports, ``npu_stats`` shows
   and loading reserves.

``compile/`` imports no family code: the builder is passed in as a callable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from optimum_npu.compile.quantization_config import QuantizationConfig
from optimum_npu.compile.quantize import Prequantized, quantize_graphs
from optimum_npu.compile.quantize_kv import quantize_kv_graphs
from optimum_npu.compile.shape_prop import propagate_shapes
from optimum_npu.compile.tensor_parallel import shard_graph, shard_weights
from optimum_npu.compile.tensor_parallel_plan import TensorParallelPlan
from optimum_npu.device.cost import GraphCostModel
from optimum_npu.device.fusion import FusedGroup, find_groups
from optimum_npu.device.ops import GraphIndex
from optimum_npu.device.sizing import MemoryPlan, plan_graph_memory
from optimum_npu.device.spec import NPUSpec
from optimum_npu.schema import Graph

#: The passes, in the order they run.
PASSES = ("capture", "quantize", "fuse", "shard", "shape_propagation", "memory_plan")

#: A family's graph builder: returns (graphs by name, weights by checkpoint name).
GraphBuilder = Callable[[], tuple[dict[str, Graph], dict[str, torch.Tensor]]]


@dataclass(frozen=True)
class Captured:
    """The graphs after ``capture``, ``quantize`` and ``fuse`` (one device's view, before sharding)."""

    graphs: dict[str, Graph]
    weights: dict[str, torch.Tensor]
    fusion: dict[str, list[FusedGroup]]


@dataclass(frozen=True)
class Compiled:
    """What every pass produced: the graphs each rank runs, each rank's weights, the memory plan.

    Attributes:
        graphs: the graphs every rank runs (the same on each rank).
        rank_weights: each rank's tensors by checkpoint name (empty tensors dicts on ``meta``).
        fusion: the fusion candidates of each graph.
        memory: the bytes one device needs (``MemoryPlan.request()`` is what loading reserves).
        tensor_parallel_size: ranks in the group.
    """

    graphs: dict[str, Graph]
    rank_weights: list[dict[str, torch.Tensor]]
    fusion: dict[str, list[FusedGroup]] = field(default_factory=dict)
    memory: MemoryPlan = field(default_factory=MemoryPlan)
    tensor_parallel_size: int = 1

    def cost_models(self, spec: NPUSpec, dtype: str) -> dict[str, GraphCostModel]:
        """The cost model of each graph on ``spec``, fused as the ``fuse`` pass found."""
        return {name: GraphCostModel(graph, spec, dtype, groups=self.fusion.get(name))
                for name, graph in self.graphs.items()}


def quantize(graphs: dict[str, Graph], weights: dict[str, torch.Tensor], config: QuantizationConfig | None = None,
             keep: tuple[str, ...] = (), given: Prequantized | None = None):
    """Pass 2 (module docstring): quantized linears when ``config`` quantizes weights; ``keep``: weights left as
    they are (the logits projection); ``given``: tensors a pre-quantized checkpoint already holds."""
    graphs, weights = quantize_graphs(graphs, weights, config, keep, given)
    return quantize_kv_graphs(graphs, config), weights


def fuse(graphs: dict[str, Graph]) -> dict[str, list[FusedGroup]]:
    """The fusion candidates of each graph."""
    return {name: find_groups(GraphIndex(graph)) for name, graph in graphs.items()}


def capture_passes(build: GraphBuilder, quantization: QuantizationConfig | None = None,
                   keep: tuple[str, ...] = (), given: Prequantized | None = None) -> Captured:
    """Passes 1-3: capture, quantize (``quantization``, sparing the ``keep`` weights, ``given`` tensors), fuse."""
    graphs, weights = build()
    graphs, weights = quantize(graphs, weights, quantization, keep, given)
    return Captured(graphs, weights, fuse(graphs))


def device_passes(captured: Captured, plan: TensorParallelPlan | None, with_weights: bool = True) -> Compiled:
    """Passes 4-6 for one tensor-parallel plan (None: one device): shard, shape propagation, memory plan.

    Args:
        captured: the output of ``capture_passes`` (reusable for several plans: the planner shards one
            capture for every size it compares).
        plan: the split over devices.
        with_weights: also cut each rank's weights (off for estimates: a ``meta`` capture has no data).
    """
    size = plan.size if plan is not None else 1
    graphs = {name: shard_graph(graph, plan) if size > 1 else graph for name, graph in captured.graphs.items()}
    rank_weights: list[dict[str, torch.Tensor]] = []
    if with_weights:  # the union of what the graphs bind (encoder and decoder graphs bind different ones)
        rank_weights = shard_weights(captured.graphs.values(), captured.weights, plan) if size > 1 \
            else [captured.weights]
    graphs = {name: graph if graph is captured.graphs[name] else _propagated(graph) for name, graph in graphs.items()}
    return Compiled(graphs, rank_weights, captured.fusion, plan_graph_memory(graphs.values()), size)


def _propagated(graph: Graph) -> Graph:
    """``shard_graph`` already propagates the shapes it changes; any other rewrite is propagated here."""
    return graph if graph.attributes.get("tensor_parallel_size", 1) > 1 else propagate_shapes(graph)


def run_pipeline(build: GraphBuilder, plan: TensorParallelPlan | None, with_weights: bool = True,
                 quantization: QuantizationConfig | None = None, given: Prequantized | None = None) -> Compiled:
    """Every pass of ``PASSES``, in order, on the graphs ``build`` captures (the plan's logits weights are never
    quantized)."""
    keep = plan.logits if plan is not None else ()
    return device_passes(capture_passes(build, quantization, keep, given), plan, with_weights)
