"""Graph costs of a deep decoder from captures of shallow copies of it.

Capturing an 80-layer graph with ``torch.export`` takes seconds per graph, even on ``meta``.
A graph's simulated time is a sum over its ops, and a decoder repeats the same layers. Let
``X`` be the model cut to one layer of each layer type (in order of first appearance: ``[F]``
for a uniform model, ``[S, F]`` for Gemma 3's local/global layers) and ``X + [T]`` the same
with one more layer of type ``T``. What a layer of type ``T`` adds is
``c_T = cost(X + [T]) - cost(X)`` (its ops and its boundary with the previous layer), so for
a model with ``n_T`` layers of each type

    cost(model) = cost(X) + sum over T of (n_T - 1) * c_T

For a uniform model this is ``cost(1) + (L - 1) * (cost(2) - cost(1))``, exact because the
layers are identical; for hybrid models it also assumes that a layer's cost does not depend
on the type of the layer before it. ``X`` holds every type, so the per-type rotary tables
of the full model are counted once. ``tests/test_planner.py`` checks both against a
full-depth capture. Each shallow graph goes through the compile pipeline once up to fusion
(``compile.pipeline.capture_passes``) and through its device passes for every tensor-parallel
size, as a real compile does.

Memory extrapolates the same way: weights and KV cache are sums over layers (the same weighted
sum of the shallow memory plans is exact), while workspace and collective buffers are peaks over a
graph, reached in a layer or at the head, so the full model's peak is the largest of the shallow
captures' peaks (exact when layers of a type are identical, as above).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM, PretrainedConfig

from optimum_npu.compile.pipeline import capture_passes, device_passes
from optimum_npu.device.cost import GraphCostModel
from optimum_npu.device.sizing import MemoryPlan
from optimum_npu.device.spec import NPUSpec
from optimum_npu.models.decoder.export import capture_graphs, tensor_parallel_plan
from optimum_npu.models.decoder.npu_config import NPUDecoderConfig
from optimum_npu.models.model_config import DecoderModelConfig
from optimum_npu.models.registry import Architecture
from optimum_npu.schema import Graph, dtype_from_name


def truncations(layer_types: tuple[str, ...]) -> dict[tuple[str, ...], float]:
    """Shallow layer-type lists to capture and the weight of each in the full model's cost (module docstring)."""
    base = tuple(dict.fromkeys(layer_types))
    if len(layer_types) <= len(base) + 1:
        return {tuple(layer_types): 1.0}
    weights = {base: 1.0}
    for layer_type in base:
        extra = layer_types.count(layer_type) - 1
        if extra:
            weights[base] -= extra
            weights[base + (layer_type,)] = float(extra)
    return weights


def truncated_config(hf_config: PretrainedConfig, layer_types: tuple[str, ...]) -> PretrainedConfig:
    """A copy of ``hf_config`` with ``len(layer_types)`` layers of these types."""
    config = copy.deepcopy(hf_config)
    text = config.get_text_config(decoder=True)
    text.num_hidden_layers = len(layer_types)
    if getattr(text, "layer_types", None):
        text.layer_types = list(layer_types)
    return config


@dataclass(frozen=True)
class ExtrapolatedCost:
    """A weighted sum of truncated graphs' cost models standing for the full-depth graph.

    Offers the ``call_seconds(positions)`` of ``GraphCostModel`` (so ``estimate.decode_step_seconds``
    and ``estimate.prefill_seconds`` accept it) and the host-link bytes the runtime moves per call.
    """

    terms: tuple[tuple[float, GraphCostModel], ...]
    host_in_bytes: int
    host_out_bytes: int

    def call_seconds(self, positions: torch.Tensor) -> tuple[float, float]:
        """(total, attention) simulated device seconds of one call of the full-depth graph."""
        total = attention = 0.0
        for weight, cost in self.terms:
            seconds, attn = cost.call_seconds(positions)
            total += weight * seconds
            attention += weight * attn
        return total, attention

    def host_seconds(self, spec: NPUSpec) -> float:
        """Host-link time of one call: inputs (ids, positions, block table, ...) in, logits out."""
        return (self.host_in_bytes + self.host_out_bytes) / spec.host_link_bandwidth


def host_bytes(graph: Graph) -> tuple[int, int]:
    """Bytes of a graph's runtime inputs (copied in) and of its outputs (copied back), as the runtime counts them."""
    nodes = {node.name: node for node in graph.nodes}
    out = 0
    for name in graph.outputs:
        meta = nodes[name].meta
        out += torch.Size(meta["shape"]).numel() * dtype_from_name(meta["dtype"]).itemsize
    return sum(spec.nbytes for spec in graph.inputs_of_kind("input")), out


def extrapolated_memory(terms: list[tuple[float, MemoryPlan]]) -> MemoryPlan:
    """The full model's memory plan from the shallow captures' plans (module docstring)."""
    def summed(field: str) -> dict[str, int]:
        total: dict[str, float] = {}
        for weight, plan in terms:
            for key, nbytes in getattr(plan, field).items():
                total[key] = total.get(key, 0) + weight * nbytes
        return {key: int(round(value)) for key, value in total.items()}

    return MemoryPlan(summed("weights_by_dtype"), summed("kv_pools"), max(p.workspace for _, p in terms),
                      max(p.collective_buffers for _, p in terms))


def extrapolated_plans(hf_config: PretrainedConfig, arch: Architecture, config: NPUDecoderConfig,
                       graph_names: list[str], tensor_parallel_sizes: list[int], spec: NPUSpec,
                       expert_parallel: bool = False) -> dict[int, tuple[dict[str, ExtrapolatedCost], MemoryPlan]]:
    """Cost of each named full-depth graph and the memory plan, for each tensor-parallel size, from truncated
    meta captures (arguments as ``extrapolated_costs``; ``expert_parallel``: the experts are spread over each
    size's devices too); ``{tp: ({graph name: cost}, memory plan)}``."""
    return extrapolated_plans_for_specs(hf_config, arch, config, graph_names, tensor_parallel_sizes,
                                        [spec], expert_parallel)[spec.name]


def extrapolated_plans_for_specs(hf_config: PretrainedConfig, arch: Architecture, config: NPUDecoderConfig,
                                 graph_names: list[str], tensor_parallel_sizes: list[int], specs: list[NPUSpec],
                                 expert_parallel: bool = False, captures: dict | None = None
                                 ) -> dict[str, dict[int, tuple[dict[str, ExtrapolatedCost], MemoryPlan]]]:
    """``extrapolated_plans`` for several NPU specs from one capture (the graphs do not depend on the spec, only
    their costs do); ``{spec name: {tp: ({graph name: cost}, memory plan)}}``.

    ``captures``: a dict shared by several calls: a raw capture is kept there under its layer types and every
    compile knob but ``quantization`` (quantizing is a pass after the capture), so calls differing only in
    quantization capture once, each quantizing its own copy."""
    layer_types = DecoderModelConfig.from_hf(hf_config).layer_types
    names = [spec.name for spec in specs]
    terms = {(s, tp): {name: [] for name in graph_names} for s in names for tp in tensor_parallel_sizes}
    memory: dict[int, list[tuple[float, MemoryPlan]]] = {tp: [] for tp in tensor_parallel_sizes}
    io: dict[str, tuple[int, int]] = {}
    for types, weight in truncations(layer_types).items():
        truncated = truncated_config(hf_config, types)
        keep = tensor_parallel_plan(truncated, 1, arch.text_model).logits  # the logits projection stays unquantized
        key = (types, tuple(graph_names), repr(dataclasses.replace(config, quantization=None)))
        captured = capture_passes(lambda: _raw_capture(truncated, arch, config, graph_names, captures, key),
                                  config.quantization, keep)
        for tp in tensor_parallel_sizes:
            split = tensor_parallel_plan(truncated, tp, arch.text_model, tp if expert_parallel else 1,
                                         config.expert_tensor_parallel)
            compiled = device_passes(captured, split, with_weights=False)
            memory[tp].append((weight, compiled.memory))
            for name in graph_names:
                io.setdefault(f"{tp}/{name}", host_bytes(compiled.graphs[name]))
            for spec in specs:
                for name, cost in compiled.cost_models(spec, config.dtype).items():
                    terms[(spec.name, tp)][name].append((weight, cost))
    return {s: {tp: ({name: ExtrapolatedCost(tuple(items), *io[f"{tp}/{name}"])
                      for name, items in terms[(s, tp)].items()}, extrapolated_memory(memory[tp]))
                for tp in tensor_parallel_sizes} for s in names}


def _raw_capture(truncated: PretrainedConfig, arch: Architecture, config: NPUDecoderConfig, graph_names: list[str],
                 captures: dict | None, key) -> tuple[dict[str, Graph], dict[str, torch.Tensor]]:
    """The graphs (and meta weights) of a weightless capture, from ``captures`` when it holds them (a copy: the
    passes after it must not change the kept one)."""
    if captures is not None and key in captures:
        return copy.deepcopy(captures[key])
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(truncated, dtype=getattr(torch, config.dtype))
    raw = capture_graphs(model, arch, config, graph_names, progress=False)
    if captures is None:
        return raw
    captures[key] = raw
    return copy.deepcopy(raw)


def extrapolated_costs(hf_config: PretrainedConfig, arch: Architecture, config: NPUDecoderConfig,
                       graph_names: list[str], tensor_parallel_sizes: list[int],
                       spec: NPUSpec) -> dict[int, dict[str, ExtrapolatedCost]]:
    """Cost of each named full-depth graph for each tensor-parallel size, from truncated meta captures.

    Args:
        hf_config: the full model's HF config (any depth).
        arch: its registry entry.
        config: compile knobs resolved against the full model; its ``tensor_parallel_size`` is ignored.
        graph_names: ``prefill``, ``decoder_batch_<n>``, ...
        tensor_parallel_sizes: sizes to shard for (each must divide the heads and MLP columns).
        spec: the target NPU.
    Returns:
        ``{tp: {graph name: ExtrapolatedCost}}``.
    """
    plans = extrapolated_plans(hf_config, arch, config, graph_names, tensor_parallel_sizes, spec)
    return {tp: costs for tp, (costs, _) in plans.items()}
