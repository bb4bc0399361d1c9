"""The configurations the SLO search compares, their graph costs and whether they fit, before any replay.

One weightless capture per (quantization, ``max_seq_len``) serves every NPU preset, tensor-parallel size,
batch size and decode-bucket set: it holds the prefill graph and the decode graphs of every batch size
any candidate uses (``extrapolate.extrapolated_plans_for_specs``). A candidate's memory per device is the
capture's plan for its tensor-parallel size: weights, workspace (the peak over the captured graphs, so an
upper bound for a candidate using fewer of them), collective buffers, and a paged KV pool of every block
that fits in the rest of the device (as ``optimum-npu plan`` counts "sequences that fit"). A candidate
**fits** when that pool holds at least ``batch_size`` sequences of the workload's longest request;
those that do not are pruned here and never replayed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from optimum_npu.device.memory import format_bytes
from optimum_npu.device.spec import resolve_spec
from optimum_npu.models.decoder.npu_config import NPUConfigError, NPUDecoderConfig
from optimum_npu.models.model_config import DecoderModelConfig
from optimum_npu.models.registry import lookup_architecture
from optimum_npu.planner.extrapolate import extrapolated_plans_for_specs
from optimum_npu.planner.models import load_hf_config
from optimum_npu.planner.serving_sim.cost_runner import GraphTiming, timings_from_plan

QUANTIZATIONS = {"none": None, "int8": {"weights": "int8"}, "int4": {"weights": "int4"}, "fp8": {"weights": "fp8"},
                 "int8+fp8kv": {"weights": "int8", "kv_cache": "fp8"}}
BLOCK_SIZE = 128
PARTITION_LEN = 512


@dataclass(frozen=True)
class Candidate:
    """One deployment: the compile envelope, its split over devices and the serving options."""

    npu: str
    quantization: str
    tensor_parallel_size: int
    batch_size: int
    decode_buckets: tuple[int, ...]
    max_seq_len: int
    prefix_caching: bool
    replicas: int = 1

    @property
    def devices(self) -> int:
        return self.tensor_parallel_size * self.replicas

    def label(self) -> str:
        buckets = ("pow2" if self.decode_buckets == _pow2(self.batch_size) and len(self.decode_buckets) > 1
                   else f"[{','.join(map(str, self.decode_buckets))}]")
        return (f"{self.npu} {self.quantization} TP{self.tensor_parallel_size}x{self.replicas} b{self.batch_size} "
                f"{buckets} L{self.max_seq_len}{' pc' if self.prefix_caching else ''}")


@dataclass
class Deployment:
    """A candidate with what the replay needs (graph timings, KV pool) and its memory per device."""

    candidate: Candidate
    fits: bool
    reason: str = ""
    memory: dict[str, int] = field(default_factory=dict)
    capacity: int = 0
    kv_blocks: int = 0
    timings: dict[str, GraphTiming] = field(default_factory=dict, repr=False)
    chunk: int = 0
    block_size: int = 0
    partition_len: int = 0
    memo: dict = field(default_factory=dict, repr=False)   # call costs shared by its replays


def _pow2(batch: int) -> tuple[int, ...]:
    return tuple(sorted({batch, *(2**i for i in range(batch.bit_length()) if 2**i < batch)}))


#: Decode bucket sets by name, as functions of the batch size B (each ends at B; duplicates are dropped).
BUCKET_SETS = {
    "pow2": _pow2,                                                         # 1, 2, 4, ..., B: least padding
    "step8": lambda b: tuple(sorted({*(n for n in (1, 2, 4) if n < b), *range(8, b, 8), b})),  # vLLM-style
    "top3": lambda b: tuple(sorted({max(1, b // 4), max(1, b // 2), b})),   # B/4, B/2, B
    "top2": lambda b: tuple(sorted({max(1, b // 2), b})),                   # B/2, B
    "max": lambda b: (b,),                                                  # B alone: one decode graph
}
DEFAULT_BUCKET_SETS = ("pow2", "top2", "max")


def bucket_sets(batch_size: int, names=DEFAULT_BUCKET_SETS) -> list[tuple[int, ...]]:
    """The decode bucket sets compared for a batch size (``BUCKET_SETS`` by name), without duplicates.

    ``step8`` is the shape of vLLM's default CUDA-graph capture sizes (1, 2, 4, then multiples of 8; vLLM's
    ``VllmConfig`` documentation of ``cudagraph_capture_sizes``), cut at the batch size.
    """
    unknown = [name for name in names if name not in BUCKET_SETS]
    if unknown or not names:
        raise ValueError(f"--bucket-sets {','.join(names)!r}: unknown set(s) {unknown}; choose from "
                         f"{sorted(BUCKET_SETS)}, e.g. --bucket-sets {','.join(DEFAULT_BUCKET_SETS)}")
    return list(dict.fromkeys(BUCKET_SETS[name](batch_size) for name in names))


def build_deployments(model, npus: list[str], quantizations: list[str], batch_sizes: list[int],
                      max_seq_lens: list[int], tensor_parallel_sizes: list[int], prefix_caching: list[bool],
                      longest_request: int, chunk: int = 128, bucket_set_names=DEFAULT_BUCKET_SETS) -> list[Deployment]:
    """Every candidate of the grid with its timings and memory (``fits`` False, with the reason, when pruned);
    ``bucket_set_names``: the decode bucket sets compared (``BUCKET_SETS``)."""
    hf_config = load_hf_config(model)
    arch = lookup_architecture(hf_config, "decoder")
    shape = DecoderModelConfig.from_hf(hf_config)
    given = {resolve_spec(name).name: name for name in npus}   # spec name -> preset or spec file
    specs = [resolve_spec(name) for name in npus]
    batches = sorted({b for size in batch_sizes for buckets in bucket_sets(size, bucket_set_names)
                      for b in buckets})
    deployments, memos = [], {}
    captures: dict = {}          # raw captures, shared by the quantizations (extrapolated_plans_for_specs)
    for quantization in quantizations:
        for max_seq_len in max_seq_lens:
            block = min(BLOCK_SIZE, max_seq_len)
            base = NPUDecoderConfig.coerce(dict(
                max_seq_len=max_seq_len, batch_size=max(batches), decoder_batch_sizes=batches, prefill_chunk_size=chunk,
                kvcache_block_size=block, attn_impl="flash_attn", kvcache_partition_len=min(PARTITION_LEN, max_seq_len),
                kvcache_num_blocks=max(batches) * (max_seq_len // block), quantization=QUANTIZATIONS[quantization]))
            valid: dict[tuple[str, int], NPUDecoderConfig | str] = {}
            for spec in specs:
                for tp in tensor_parallel_sizes:
                    try:
                        valid[(spec.name, tp)] = dataclasses.replace(
                            base, npu=given[spec.name], tensor_parallel_size=tp, device=0).resolve(shape)
                    except NPUConfigError as err:
                        valid[(spec.name, tp)] = str(err)
            sizes = sorted({tp for (_, tp), c in valid.items() if not isinstance(c, str)})
            reference = next((c for c in valid.values() if not isinstance(c, str)), None)
            names = ["prefill", *(f"decoder_batch_{b}" for b in batches)]
            single = dataclasses.replace(reference, tensor_parallel_size=1) if reference else None
            plans = extrapolated_plans_for_specs(hf_config, arch, single, names, sizes, specs,
                                                 captures=captures) if reference else {}
            for spec in specs:
                for tp in tensor_parallel_sizes:
                    config = valid[(spec.name, tp)]
                    for batch in batch_sizes:
                        for buckets in bucket_sets(batch, bucket_set_names):
                            for caching in prefix_caching:
                                candidate = Candidate(spec.name, quantization, tp, batch, buckets, max_seq_len, caching)
                                memo = memos.setdefault((spec.name, tp, quantization, max_seq_len), {})
                                deployments.append(_deployment(candidate, config, plans.get(spec.name, {}).get(tp),
                                                               spec, longest_request, memo))
    return deployments


def _deployment(candidate: Candidate, config, plan, spec, longest_request: int, memo: dict) -> Deployment:
    if isinstance(config, str):
        return Deployment(candidate, False, config)
    if longest_request > candidate.max_seq_len:
        return Deployment(candidate, False, f"the workload's longest request ({longest_request} tokens) exceeds "
                                            f"max_seq_len={candidate.max_seq_len}")
    costs, memory_plan = plan
    per_block = memory_plan.kv_pools.get("paged", 0) // config.kvcache_num_blocks
    other = memory_plan.total - memory_plan.kv_cache
    blocks = max(0, (spec.dram_bytes - other) // per_block) if per_block else 0
    memory = {**{k: v for k, v in memory_plan.request().items() if k != "kv_cache"}, "kv_cache": blocks * per_block}
    needed = candidate.batch_size * -(-longest_request // config.kvcache_block_size)
    deployment = Deployment(candidate, blocks >= needed, memory=memory, capacity=spec.dram_bytes, kv_blocks=blocks,
                            timings=timings_from_plan(costs, spec), chunk=config.prefill_chunk_size,
                            block_size=config.kvcache_block_size,
                            partition_len=config.partition_len, memo=memo)
    if not deployment.fits:
        deployment.reason = (f"{format_bytes(other)} of weights/workspace per device leave room for {blocks} KV "
                             f"blocks; "
                             f"{candidate.batch_size} sequences of {longest_request} tokens need {needed}")
    return deployment
