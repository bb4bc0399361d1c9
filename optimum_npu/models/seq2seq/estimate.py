"""Simulated seconds and memory of an encoder-decoder configuration without its weights (built on ``meta``).

``estimate_seq2seq`` captures every graph of the configuration (encoder buckets, the prefill graph that writes a
row's cross-attention keys/values, the decode graphs) through the same compile pipeline as an export
(``run_pipeline(..., with_weights=False)``) and costs each call as the device engine charges it: the roofline time
of the graph plus the host-link copies of its inputs and outputs. On a compiled model of the same config the decode
step equals what ``npu_stats`` reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PretrainedConfig

from optimum_npu.compile.pipeline import Compiled, run_pipeline
from optimum_npu.device.cost import GraphCostModel
from optimum_npu.device.ops import nbytes
from optimum_npu.device.spec import NPUSpec, resolve_spec
from optimum_npu.models.decoder.estimate import decode_step_seconds, prefill_seconds
from optimum_npu.models.registry import lookup_architecture
from optimum_npu.models.seq2seq.architectures import Seq2SeqModelConfig
from optimum_npu.models.seq2seq.export import capture_seq2seq_graphs
from optimum_npu.models.seq2seq.npu_config import NPUSeq2SeqConfig
from optimum_npu.models.seq2seq.real_shapes import meta_model
from optimum_npu.models.seq2seq.tp_plan import seq2seq_tp_plan


@dataclass(frozen=True)
class Seq2SeqEstimate:
    """One target: bytes one device holds by category (one tensor-parallel rank), and simulated seconds per graph
    call.

    Attributes:
        memory: ``weights``, ``self_attn_kv`` (the paged pool), ``cross_kv`` (one slot per row), ``workspace``.
        encoder_s: seconds of one call of each encoder bucket graph, by name.
        prefill_s: one row's prefill call (its cross-attention keys/values written + the decoder prompt).
        decode_s: one decode step at the longest context, by decode batch size.
    """

    npu: str
    capacity_bytes: int
    memory: dict[str, int]
    encoder_s: dict[str, float]
    prefill_s: float
    decode_s: dict[int, float]

    @property
    def total_bytes(self) -> int:
        return sum(self.memory.values())


def _host_seconds(compiled: Compiled, costs: dict[str, GraphCostModel], name: str, spec: NPUSpec) -> float:
    """Host-link time of one call, as ``DeviceEngine.run`` charges it: the graph's inputs in, its outputs back."""
    graph, shapes = compiled.graphs[name], costs[name].index.shapes
    moved = sum(nbytes(s.shape, s.dtype) for s in graph.inputs_of_kind("input"))
    moved += sum(nbytes(*shapes[output]) for output in graph.outputs if output in shapes)
    return moved / spec.host_link_bandwidth


def meta_capture(hf_config: PretrainedConfig, config: NPUSeq2SeqConfig) -> tuple[Seq2SeqModelConfig, Compiled]:
    """Every graph of ``config`` (resolved) captured from a weightless model of ``hf_config``."""
    architecture = lookup_architecture(hf_config, "seq2seq").name
    shape = Seq2SeqModelConfig.from_hf(hf_config, architecture)
    model = meta_model(hf_config, architecture, config.dtype)
    plan = seq2seq_tp_plan(shape, config.tensor_parallel_size)   # refuses a size that does not divide the heads
    return shape, run_pipeline(lambda: capture_seq2seq_graphs(model, shape, config), plan, with_weights=False)


def cost_seq2seq(compiled: Compiled, config: NPUSeq2SeqConfig, spec: NPUSpec) -> Seq2SeqEstimate:
    """The estimate of a captured configuration on one target."""
    costs: dict[str, GraphCostModel] = compiled.cost_models(spec, config.dtype)
    encoder = {name: costs[name].call(None).seconds + _host_seconds(compiled, costs, name, spec)
               for name in config.graph_names() if name.startswith("encoder_")}
    prefill = (prefill_seconds(costs["prefill"], config.prefill_chunk_size, config.prefill_chunk_size)
               + _host_seconds(compiled, costs, "prefill", spec))
    decode = {batch: decode_step_seconds(costs[f"decoder_batch_{batch}"], batch, config.max_seq_len)
              + _host_seconds(compiled, costs, f"decoder_batch_{batch}", spec) for batch in config.decoder_batch_sizes}
    request = compiled.memory.request()
    pools = dict(compiled.memory.kv_pools)
    memory = {"weights": request.get("weights", 0), "self_attn_kv": pools.get("paged", 0),
              "cross_kv": pools.get("cross", 0), "workspace": request.get("workspace", 0)}
    return Seq2SeqEstimate(spec.name, spec.dram_bytes, memory, encoder, prefill, decode)


def estimate_seq2seq(hf_config: PretrainedConfig, npu_config: NPUSeq2SeqConfig | dict | None,
                     npus: tuple[str, ...]) -> tuple[NPUSeq2SeqConfig, list[Seq2SeqEstimate]]:
    """Resolves ``npu_config`` for the model, captures its graphs once and costs them on each target.

    Returns:
        The resolved config and one estimate per target, in order.
    """
    architecture = lookup_architecture(hf_config, "seq2seq").name
    shape = Seq2SeqModelConfig.from_hf(hf_config, architecture)
    config = NPUSeq2SeqConfig.coerce(npu_config).resolve(shape.max_source_positions, shape.audio_frames,
                                                         shape.max_target_positions)
    specs = [resolve_spec(npu) for npu in npus]   # a bad target is refused before the capture
    _, compiled = meta_capture(hf_config, config)
    return config, [cost_seq2seq(compiled, config, spec) for spec in specs]
