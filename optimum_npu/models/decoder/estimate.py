"""Simulated costs of a decoder configuration without its weights (the model is built on ``meta``).

The graphs captured from a weightless model are the graphs a real compile produces, so
their roofline costs are the same; nothing is executed and no weight memory is used. This
is how configurations too large for the host (8B, 70B) are sized.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoModelForCausalLM, PretrainedConfig

from optimum_npu.compile.pipeline import Compiled, run_pipeline
from optimum_npu.device.cost import GraphCostModel
from optimum_npu.device.spec import resolve_spec
from optimum_npu.models.decoder.export import capture_graphs, tensor_parallel_plan
from optimum_npu.models.decoder.npu_config import NPUDecoderConfig
from optimum_npu.models.model_config import DecoderModelConfig
from optimum_npu.models.registry import lookup_architecture


def meta_compile(hf_config: PretrainedConfig, config: NPUDecoderConfig, graph_names: list[str]) -> Compiled:
    """The compile pipeline on a weightless (``meta``) model: the graphs, fusion and memory plan a real
    compile of ``config`` (already resolved) produces, without weights."""
    arch = lookup_architecture(hf_config, "decoder")
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config, dtype=getattr(torch, config.dtype))
    plan = tensor_parallel_plan(hf_config, config.tensor_parallel_size, arch.text_model, config.expert_parallel_size,
                                config.expert_tensor_parallel)
    return run_pipeline(lambda: capture_graphs(model, arch, config, graph_names, progress=False), plan,
                        with_weights=False, quantization=config.quantization)


def meta_cost_models(hf_config: PretrainedConfig, npu_config: Any,
                     graph_names: list[str]) -> tuple[NPUDecoderConfig, dict[str, GraphCostModel]]:
    """Resolves ``npu_config`` for the model and returns the cost model of each named graph
    (the graph one device runs under ``tensor_parallel_size``)."""
    config = NPUDecoderConfig.coerce(npu_config).resolve(DecoderModelConfig.from_hf(hf_config))
    return config, meta_compile(hf_config, config, graph_names).cost_models(resolve_spec(config.npu), config.dtype)


def decode_step_seconds(cost: GraphCostModel, batch: int, context: int) -> float:
    """Simulated seconds of one decode step with ``batch`` sequences each ``context`` tokens long."""
    positions = torch.full((batch, 1), context - 1, dtype=torch.long)
    return cost.call_seconds(positions)[0]


def prefill_seconds(cost: GraphCostModel, chunk: int, prompt_len: int, start: int = 0) -> float:
    """Simulated seconds to prefill positions ``[start, prompt_len)`` chunk by chunk."""
    total = 0.0
    for first in range(start, prompt_len, chunk):
        count = min(chunk, prompt_len - first)
        positions = torch.full((1, chunk), -1, dtype=torch.long)
        positions[0, :count] = torch.arange(first, first + count)
        total += cost.call_seconds(positions)[0]
    return total
