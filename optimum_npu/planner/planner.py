"""Capacity planner: memory per device, fit, TTFT and decode speed of a decoder for several
tensor-parallel sizes, without weights and without compiling for real.

Memory and speed both come from the compile pipeline (``compile/pipeline.py``) run on a
weightless (``meta``) truncated model and extrapolated to the full depth (``extrapolate``):
the memory plan is the one a real compile makes from its graphs and loading reserves, the
speed is the cost model of those graphs.
The reported times include what the runtime adds per graph call (the host-link copies of
ids/positions/block table in and logits out), so they are the figures ``model.npu_stats``
shows for the same knobs: ``decode_ms_per_token`` for a full decode bucket whose sequences
are ``decode_context_len`` tokens long, ``ttft_ms`` for one prompt prefilled chunk by chunk.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import PretrainedConfig

from optimum_npu.device.spec import resolve_spec
from optimum_npu.models.families import family_of_config
from optimum_npu.models.decoder.estimate import decode_step_seconds, prefill_seconds
from optimum_npu.models.decoder.export import graph_names
from optimum_npu.models.decoder.memory_plan import blocks_in_plan, suggest_fit
from optimum_npu.models.decoder.npu_config import NPUConfigError, NPUDecoderConfig
from optimum_npu.models.model_config import DecoderModelConfig
from optimum_npu.models.registry import lookup_architecture
from optimum_npu.planner.extrapolate import ExtrapolatedCost, extrapolated_plans
from optimum_npu.planner.models import load_hf_config

DEFAULT_TENSOR_PARALLEL_SIZES = (1, 2, 4, 8)
DEFAULT_PROMPT_LENGTHS = (128, 1024)


@dataclass(frozen=True)
class PlanResult:
    """The planner's figures for one tensor-parallel size (all per device).

    Attributes:
        tensor_parallel_size: devices the model is split across.
        expert_parallel_size: devices the experts of a mixture-of-experts model are spread over (1: replicated).
        valid: whether the model can be split this way; if not, ``error`` says why and the
            figures are empty.
        fits: whether ``memory_per_device_bytes["total"]`` fits in one device's DRAM.
        memory_per_device_bytes: ``weights``, ``kv_cache`` (a pool for ``batch_size`` sequences of
            ``max_seq_len``), ``workspace``, ``collective_buffers`` (TP > 1) and ``total``.
        device_capacity_bytes: DRAM of one device of the target NPU.
        suggestion: what would fit, when this does not: the smallest larger planned size that fits, else
            the shape estimate's hint (``memory_plan.suggest_fit``).
        kv_sequences_that_fit: full-length sequences whose KV cache fits next to the weights.
        ttft_ms: prompt length -> simulated time to first token (None past ``max_seq_len``).
        decode_ms_per_token: decode batch size -> simulated time of one decode step.
        tokens_per_s: decode batch size -> generated tokens per simulated second (full batch).
        decode_context_len: sequence length the decode figures are computed at.
        npu_config: the resolved compile knobs (what ``npu_config=`` would compile).
    """

    tensor_parallel_size: int
    architecture: str
    npu: str
    valid: bool
    expert_parallel_size: int = 1
    error: str | None = None
    fits: bool = False
    memory_per_device_bytes: dict[str, int] | None = field(default=None, hash=False)
    device_capacity_bytes: int = 0
    suggestion: str | None = None
    kv_sequences_that_fit: int | None = None
    ttft_ms: dict[int, float | None] = field(default_factory=dict, hash=False)
    decode_ms_per_token: dict[int, float] = field(default_factory=dict, hash=False)
    tokens_per_s: dict[int, float] = field(default_factory=dict, hash=False)
    decode_context_len: int | None = None
    npu_config: dict[str, Any] | None = field(default=None, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: integer keys (prompt lengths, batch sizes) become strings."""
        data = dataclasses.asdict(self)
        for key in ("ttft_ms", "decode_ms_per_token", "tokens_per_s"):
            data[key] = {str(k): v for k, v in data[key].items()}
        return data


def _positive_ints(name: str, values: Any) -> list[int]:
    values = list(values)
    if not values or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values):
        raise ValueError(f"{name}={values!r} is invalid: give a non-empty list of integers >= 1, e.g. [1, 2, 4, 8]")
    return sorted(set(values))


def _ttft_seconds(cost: ExtrapolatedCost, config: NPUDecoderConfig, prompt_len: int, host_s: float) -> float:
    chunks = math.ceil(prompt_len / config.prefill_chunk_size)
    return prefill_seconds(cost, config.prefill_chunk_size, prompt_len) + chunks * host_s


def plan(model: str | Path | PretrainedConfig, npu_config: NPUDecoderConfig | dict | None = None,
         tensor_parallel_sizes=DEFAULT_TENSOR_PARALLEL_SIZES, prompt_lengths=DEFAULT_PROMPT_LENGTHS,
         decode_context_len: int | None = None, expert_parallel: bool = False) -> list[PlanResult]:
    """Sizes a decoder for each tensor-parallel size: memory per device, fit, TTFT, decode speed.

    Nothing is compiled for real and no weight is read: an 8B or 70B configuration is planned
    in seconds on a laptop.

    Args:
        model: a ``config.json`` path, a model directory, a built-in shape (``llama-3-8b``,
            ``llama-3-70b``, ... see ``planner.models.BUILTIN_MODELS``), a Hub id, or an HF config.
        npu_config: compile knobs as for ``NPUModelForCausalLM`` (``max_seq_len``, ``batch_size``,
            ``decoder_batch_sizes``, ``npu``, ...), without ``tensor_parallel_size``.
        tensor_parallel_sizes: the configurations to compare.
        prompt_lengths: prompt lengths to estimate the TTFT of.
        decode_context_len: sequence length of the decode estimate (default ``max_seq_len``,
            the slowest step; with eager attention every length costs the same).
        expert_parallel: spread a mixture-of-experts model's experts over each size's devices
            (``expert_parallel_size`` = ``tensor_parallel_size``); otherwise they are replicated.
    Returns:
        One ``PlanResult`` per tensor-parallel size, in increasing order; sizes that do not
        divide the model's heads (or exceed the node) come back with ``valid=False`` and the reason.
    Raises:
        NPUConfigError: a knob is invalid whatever the tensor-parallel size.
        ValueError: the model cannot be read or its architecture is not supported.
    """
    hf_config = load_hf_config(model)
    family = family_of_config(hf_config)
    hf_config = family.plan_config(hf_config) if family is not None else hf_config
    arch = lookup_architecture(hf_config, "decoder")
    shape = DecoderModelConfig.from_hf(hf_config)
    sizes = _positive_ints("tensor_parallel_sizes", tensor_parallel_sizes)
    prompts = _positive_ints("prompt_lengths", prompt_lengths)
    base = NPUDecoderConfig.coerce(npu_config)
    if base.tensor_parallel_size != 1:
        raise NPUConfigError(f"npu_config sets tensor_parallel_size={base.tensor_parallel_size}, but the planner "
                             "varies it: drop it and pass tensor_parallel_sizes=[...] instead")
    base = dataclasses.replace(base, device=0)
    reference = base.resolve(shape)  # raises for knobs invalid at any size
    if base.kvcache_num_blocks is None:  # size the pool for the promised batch, not for what fits
        reference = dataclasses.replace(reference, kvcache_num_blocks=reference.batch_size *
                                        reference.blocks_per_sequence)
    spec = resolve_spec(reference.npu)
    context = decode_context_len or reference.max_seq_len
    if not 1 <= context <= reference.max_seq_len:
        raise NPUConfigError(f"decode_context_len={context} (--context-len) is outside "
                             f"[1, max_seq_len={reference.max_seq_len}]; choose a length in that range")

    configs: dict[int, NPUDecoderConfig | str] = {}
    for tp in sizes:
        try:
            resolved = dataclasses.replace(base, tensor_parallel_size=tp,
                                           expert_parallel_size=tp if expert_parallel else 1).resolve(shape)
        except NPUConfigError as err:
            configs[tp] = str(err)
            continue
        if base.kvcache_num_blocks is None:  # size the pool for the promised batch, not for what fits
            resolved = dataclasses.replace(resolved, kvcache_num_blocks=resolved.batch_size *
                                           resolved.blocks_per_sequence)
        configs[tp] = resolved

    valid = [tp for tp, config in configs.items() if not isinstance(config, str)]
    plans = extrapolated_plans(hf_config, arch, reference, graph_names(reference), valid, spec,
                               expert_parallel) if valid else {}
    fitting = [tp for tp in valid if plans[tp][1].total <= spec.dram_bytes]
    results = []
    for tp, config in configs.items():
        common = dict(tensor_parallel_size=tp, expert_parallel_size=tp if expert_parallel else 1,
                      architecture=arch.name, npu=spec.name,
                      device_capacity_bytes=spec.dram_bytes)
        if isinstance(config, str):
            results.append(PlanResult(valid=False, error=config, **common))
            continue
        costs, memory_plan = plans[tp]
        memory = memory_plan.request()
        total = sum(memory.values())
        fits = total <= spec.dram_bytes
        larger = next((size for size in fitting if size > tp), None)
        suggestion = None if fits else (f"tensor_parallel_size={larger} fits" if larger else
                                        suggest_fit(shape, config, spec))
        prefill = costs["prefill"]
        prefill_host = prefill.host_seconds(spec)
        ttft = {p: (_ttft_seconds(prefill, config, p, prefill_host) * 1e3 if p <= config.max_seq_len else None)
                for p in prompts}
        decode_ms, throughput = {}, {}
        for batch in config.decoder_batch_sizes:
            cost = costs[f"decoder_batch_{batch}"]
            step = decode_step_seconds(cost, batch, context) + cost.host_seconds(spec)
            decode_ms[batch], throughput[batch] = step * 1e3, batch / step
        results.append(PlanResult(
            valid=True, fits=fits, memory_per_device_bytes={**memory, "total": total},
            suggestion=suggestion,
            kv_sequences_that_fit=blocks_in_plan(memory_plan, config.kvcache_num_blocks, spec)
            // config.blocks_per_sequence,
            ttft_ms=ttft, decode_ms_per_token=decode_ms, tokens_per_s=throughput, decode_context_len=context,
            npu_config=config.compile_knobs(), **common))
    return results
