"""Compile knobs of a decoder-only model: one typed, frozen, validated object.

``NPUDecoderConfig(...)`` checks each knob on its own; ``resolve(model_config)`` fills
the defaults derived from the model and checks the knobs against it. Both run before
any compile work, and every error names the knob, the value, what is allowed and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from optimum_npu.compile.quantization_config import QuantizationConfig
from optimum_npu.device.spec import PRESETS, resolve_spec
from optimum_npu.models.decoder.quantization import check_quantization, coerce_quantization

if TYPE_CHECKING:  # the knobs module stays free of torch/Transformers: the CLI reads its fields to build flags
    from optimum_npu.device.buckets import Bucket
    from optimum_npu.models.model_config import DecoderModelConfig

SUPPORTED_DTYPES = ("float32", "float16", "bfloat16")
#: Options that may differ between compile time and load time.
RUNTIME_OPTIONS = ("device", "enable_prefix_caching", "profile", "collectives")
COLLECTIVE_BACKENDS = ("in_process", "torch.distributed")
ATTN_IMPLS = ("eager", "flash_attn")
PREFILL_LOGITS = ("last", "all")
#: The prefill graph that returns every position's logits (``prefill_logits="all"``).
ALL_LOGITS_GRAPH = "prefill_all_logits"
#: Partition length chosen for flash attention when none is given.
DEFAULT_PARTITION_LEN = 4096
#: Keys of an artifact's npu_config.json besides the knobs (written by the compiler, checked at load).
STORED_METADATA = ("architecture", "family", "graphs", "npu_spec", "library_version", "format_version",
                   "torch_version")
#: Knobs that ``resolve`` fills: a compiled artifact always stores them.
RESOLVED_KNOBS = ("max_seq_len", "decoder_batch_sizes", "prefill_chunk_size", "dtype", "kvcache_block_size",
                  "kvcache_num_blocks", "attn_impl")


class NPUConfigError(ValueError):
    """An invalid compile knob (the message names the knob, the value, the range and the fix)."""


def _positive_int(name: str, value: Any, fix: str = "") -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise NPUConfigError(f"{name}={value!r} is invalid: it must be an integer >= 1. {fix}".rstrip())


def expert_parallel_problem(size: int, model: DecoderModelConfig) -> str | None:
    """Why ``expert_parallel_size=size`` cannot split ``model``'s experts (None when it can)."""
    if size == 1:
        return None
    if not model.num_experts:
        return (f"expert_parallel_size={size} needs a mixture-of-experts model; {model.architecture} has no experts: "
                "use expert_parallel_size=1")
    if model.num_experts % size:
        choices = [d for d in range(1, model.num_experts + 1) if model.num_experts % d == 0]
        return (f"expert_parallel_size={size} does not divide the model's {model.num_experts} experts per layer; "
                f"choose expert_parallel_size in {choices}")
    return None


def expert_tensor_parallel_problem(enabled: bool, size: int, model: DecoderModelConfig) -> str | None:
    """Why ``expert_tensor_parallel`` cannot split ``model``'s experts over ``size`` devices (None when it can)."""
    if not enabled:
        return None
    if not model.num_experts:
        return (f"expert_tensor_parallel=True needs a mixture-of-experts model; {model.architecture} has no experts: "
                "leave expert_tensor_parallel=False")
    if model.moe_intermediate_size % size:
        choices = [d for d in range(1, 65) if model.moe_intermediate_size % d == 0]
        return (f"expert_tensor_parallel=True with tensor_parallel_size={size} does not divide the experts' "
                f"{model.moe_intermediate_size} intermediate features; choose tensor_parallel_size in {choices}")
    return None


@dataclass(frozen=True)
class NPUDecoderConfig:
    """Compile configuration of a decoder-only causal LM.

    Args:
        max_seq_len: longest sequence (prompt + generated tokens) the KV cache holds.
            Default: the model's position limit, capped at 2048.
        batch_size: most sequences generated together.
        decoder_batch_sizes: the decode graphs to compile (one per entry); a batch of n runs
            on the smallest entry >= n. Default: powers of two below ``batch_size``, and it.
        prefill_chunk_size: tokens per prefill graph call (batch 1); longer prompts run
            as successive chunks. Default: min(128, max_seq_len).
        dtype: compute and weight dtype, one of float32/float16/bfloat16. Default: the
            checkpoint's dtype when it is one of those, else float32.
        npu: target device spec, a preset name or a JSON spec file path (see examples/custom_npu_spec.json).
        kvcache_block_size: tokens per KV-cache block. Default: ``max_seq_len``.
        kvcache_num_blocks: blocks in the paged KV pool. Default: enough for ``batch_size``
            full sequences, or as many as fit in the device memory left after the weights.
        attn_impl: ``eager`` (attention over the whole static cache) or ``flash_attn``
            (partition by partition, skipping partitions past the context). Default:
            ``flash_attn`` when ``kvcache_partition_len`` is set or ``max_seq_len`` > 8192.
        kvcache_partition_len: flash-attention partition length. Default with flash_attn:
            min(4096, max_seq_len).
        tensor_parallel_size: devices one model is split across (attention heads, MLP
            columns/rows, vocabulary and KV cache are split; collectives are inserted).
        expert_parallel_size: 1, or ``tensor_parallel_size``: the experts of a mixture-of-experts model are
            spread over the group's devices (each holds E / n experts; dispatch and combine are all-to-all
            collectives, docs/moe.md). Must divide the model's experts per layer.
        expert_tensor_parallel: with ``expert_parallel_size`` 1, split every routed expert's intermediate size
            over the tensor-parallel group (each device holds 1/n of every expert; an all-reduce follows the
            experts) instead of replicating the experts on every device. Default False.
        prefill_logits: ``"last"`` (default: the prefill graph returns the next-token logits only) or ``"all"``:
            also compile ``prefill_all_logits``, a prefill graph returning the logits of every position, so
            ``model(input_ids, logits_to_keep=0).logits`` is ``[B, S, V]`` (perplexity, scoring).
        quantization: low-precision weights and/or KV cache, e.g. ``{"weights": "int8", "kv_cache": "fp8",
            "group_size": 128}`` (see ``QuantizationConfig`` and docs/quantization.md). Default: none.
        device: runtime option: the simulated device id of the first rank (the ranks use
            consecutive ids), or one id per rank.
        collectives: runtime option: ``in_process`` (every rank a thread here) or
            ``torch.distributed`` (this process is one rank of an initialised gloo group).
        enable_prefix_caching: runtime option: reuse the KV blocks of a prompt prefix seen
            before (full blocks only; not for models with sliding-window layers).
        profile: runtime option: record every op on its device's track (see ``model.npu_profile``).
    """

    max_seq_len: int | None = None
    batch_size: int = 1
    decoder_batch_sizes: tuple[int, ...] | None = None
    prefill_chunk_size: int | None = None
    dtype: str | None = field(default=None, metadata={"choices": SUPPORTED_DTYPES})
    npu: str = "atom"
    kvcache_block_size: int | None = None
    kvcache_num_blocks: int | None = None
    attn_impl: str | None = field(default=None, metadata={"choices": ATTN_IMPLS})
    kvcache_partition_len: int | None = None
    tensor_parallel_size: int = 1
    expert_parallel_size: int = 1
    expert_tensor_parallel: bool = False
    prefill_logits: str = field(default="last", metadata={"choices": PREFILL_LOGITS})
    quantization: QuantizationConfig | None = None
    device: int | tuple[int, ...] = field(default=0, metadata={"runtime": True})
    enable_prefix_caching: bool = field(default=False, metadata={"runtime": True})
    profile: bool = field(default=False, metadata={"runtime": True})
    collectives: str = field(default="in_process", metadata={"runtime": True})

    def __post_init__(self):
        if self.decoder_batch_sizes is not None and not isinstance(self.decoder_batch_sizes, (list, tuple)):
            raise NPUConfigError(f"decoder_batch_sizes={self.decoder_batch_sizes!r} must be a list of batch sizes, "
                                 f"e.g. decoder_batch_sizes=[{self.decoder_batch_sizes!r}]")
        if isinstance(self.npu, os.PathLike):
            object.__setattr__(self, "npu", os.fspath(self.npu))
        if not isinstance(self.npu, str):
            raise NPUConfigError(f"npu={self.npu!r} is invalid: give a preset name {sorted(PRESETS)} or the path "
                                 "of a JSON spec file")
        if isinstance(self.decoder_batch_sizes, list):
            object.__setattr__(self, "decoder_batch_sizes", tuple(self.decoder_batch_sizes))
        for name in ("max_seq_len", "prefill_chunk_size", "kvcache_block_size", "kvcache_partition_len",
                     "kvcache_num_blocks"):
            value = getattr(self, name)
            if value is not None:
                _positive_int(name, value)
        _positive_int("batch_size", self.batch_size)
        _positive_int("tensor_parallel_size", self.tensor_parallel_size)
        _positive_int("expert_parallel_size", self.expert_parallel_size)
        if self.prefill_logits not in PREFILL_LOGITS:
            raise NPUConfigError(f"prefill_logits={self.prefill_logits!r} is not one of {list(PREFILL_LOGITS)}: 'last' "
                                 "compiles next-token logits only, 'all' adds a graph returning every position's")
        if self.expert_parallel_size not in (1, self.tensor_parallel_size):
            raise NPUConfigError(f"expert_parallel_size={self.expert_parallel_size} with tensor_parallel_size="
                                 f"{self.tensor_parallel_size}: experts are spread over the tensor-parallel group, so "
                                 f"choose expert_parallel_size in [1, {self.tensor_parallel_size}] (raise "
                                 "tensor_parallel_size for more devices)")
        if not isinstance(self.expert_tensor_parallel, bool):
            raise NPUConfigError(f"expert_tensor_parallel={self.expert_tensor_parallel!r} must be True or False")
        if self.expert_tensor_parallel and self.expert_parallel_size > 1:
            raise NPUConfigError(f"expert_tensor_parallel=True with expert_parallel_size={self.expert_parallel_size}: "
                                 "the experts are split either by expert (expert_parallel_size) or by intermediate "
                                 "size (expert_tensor_parallel); set one of them")
        object.__setattr__(self, "quantization", coerce_quantization(self.quantization, NPUConfigError))
        if self.collectives not in COLLECTIVE_BACKENDS:
            raise NPUConfigError(f"collectives={self.collectives!r} is not supported; choose one of "
                                 f"{list(COLLECTIVE_BACKENDS)}")
        if isinstance(self.device, list):
            object.__setattr__(self, "device", tuple(self.device))
        if self.decoder_batch_sizes is not None:
            self._check_decoder_batch_sizes()
        if self.dtype is not None and self.dtype not in SUPPORTED_DTYPES:
            raise NPUConfigError(f"dtype={self.dtype!r} is not supported; choose one of {list(SUPPORTED_DTYPES)}")
        if self.attn_impl is not None and self.attn_impl not in ATTN_IMPLS:
            raise NPUConfigError(f"attn_impl={self.attn_impl!r} is not supported; choose one of {list(ATTN_IMPLS)}")
        if self.attn_impl == "eager" and self.kvcache_partition_len is not None:
            raise NPUConfigError(f"kvcache_partition_len={self.kvcache_partition_len} only applies to "
                                 "attn_impl='flash_attn'; drop it or set attn_impl='flash_attn'")
        for name in ("enable_prefix_caching", "profile"):
            if not isinstance(getattr(self, name), bool):
                raise NPUConfigError(f"{name}={getattr(self, name)!r} must be True or False")
        ids = self.device if isinstance(self.device, tuple) else (self.device,)
        if not ids or any(not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in ids):
            raise NPUConfigError(f"device={self.device!r} is invalid: give a device id >= 0 or a list of ids")
        if isinstance(self.device, tuple) and len(set(self.device)) != len(self.device):
            raise NPUConfigError(f"device={list(self.device)} lists a device twice; give distinct ids")
        if isinstance(self.device, tuple) and len(self.device) != self.tensor_parallel_size:
            raise NPUConfigError(f"device={list(self.device)} gives {len(self.device)} ids for "
                                 f"tensor_parallel_size={self.tensor_parallel_size}; give one id per rank")

    def _check_decoder_batch_sizes(self) -> None:
        sizes = self.decoder_batch_sizes
        if not sizes:
            raise NPUConfigError("decoder_batch_sizes=() is empty: give at least one size, e.g. [1]")
        for size in sizes:
            _positive_int("decoder_batch_sizes entry", size)
            if size > self.batch_size:
                raise NPUConfigError(
                    f"decoder_batch_sizes entry {size} is larger than batch_size={self.batch_size}; entries must "
                    f"be in [1, batch_size]: raise batch_size to {size} or drop the entry"
                )
        if len(set(sizes)) != len(sizes):
            raise NPUConfigError(f"decoder_batch_sizes={list(sizes)} has duplicates; list each size once")
        if max(sizes) != self.batch_size:
            raise NPUConfigError(
                f"decoder_batch_sizes={list(sizes)} has no graph for batch_size={self.batch_size}, so a full batch "
                f"could not decode; add {self.batch_size} to decoder_batch_sizes or set batch_size={max(sizes)}"
            )
        object.__setattr__(self, "decoder_batch_sizes", tuple(sorted(sizes)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NPUDecoderConfig":
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            hints = [f"{name!r} -> did you mean {close[0]!r}?" for name in unknown
                     if (close := difflib.get_close_matches(str(name), known, n=1, cutoff=0.6))]
            hint = f" ({'; '.join(hints)})" if hints else ""
            raise NPUConfigError(f"unknown npu_config keys {unknown}{hint}; known keys: {known}")
        return cls(**data)

    @classmethod
    def coerce(cls, value: "NPUDecoderConfig | dict | None") -> "NPUDecoderConfig":
        """Accepts the object itself, a dict of knobs, or None (all defaults)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            return cls.from_dict(value)
        raise NPUConfigError(f"npu_config must be an NPUDecoderConfig or a dict, got {type(value).__name__}")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["decoder_batch_sizes"] = list(self.decoder_batch_sizes or [])
        if isinstance(self.device, tuple):
            data["device"] = list(self.device)
        return data

    @property
    def device_ids(self) -> list[int]:
        """The simulated device of each tensor-parallel rank."""
        if isinstance(self.device, tuple):
            return list(self.device)
        return [self.device + rank for rank in range(self.tensor_parallel_size)]

    def compile_knobs(self) -> dict[str, Any]:
        """Every field except the runtime options."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_OPTIONS}

    def buckets(self) -> dict[str, Bucket]:
        """The graphs these knobs compile, by file name: ``prefill`` (batch 1, ``prefill_chunk_size`` tokens)
        and ``decoder_batch_<n>`` (n rows of 1 token) for each entry of ``decoder_batch_sizes``."""
        from optimum_npu.device.buckets import Bucket

        found = {"prefill": Bucket("prefill", "prefill", 1, self.prefill_chunk_size)}
        if self.prefill_logits == "all":
            found[ALL_LOGITS_GRAPH] = Bucket(ALL_LOGITS_GRAPH, "prefill_all", 1, self.prefill_chunk_size)
        for size in self.decoder_batch_sizes:
            found[f"decoder_batch_{size}"] = Bucket(f"decoder_batch_{size}", "decode", size, 1)
        return found

    @property
    def blocks_per_sequence(self) -> int:
        return self.max_seq_len // self.kvcache_block_size

    @property
    def partition_len(self) -> int:
        """The flash partition length, 0 for eager attention."""
        return self.kvcache_partition_len if self.attn_impl == "flash_attn" else 0

    def resolve(self, model: DecoderModelConfig) -> "NPUDecoderConfig":
        """Fills model-derived defaults and checks the knobs against the model and the target spec."""
        try:
            spec = resolve_spec(self.npu)
        except ValueError as err:
            raise NPUConfigError(str(err)) from None
        if max(self.device_ids) >= spec.devices_per_node:
            raise NPUConfigError(
                f"device={self.device!r} with tensor_parallel_size={self.tensor_parallel_size} needs devices "
                f"{self.device_ids}, but the {spec.name!r} node has devices 0..{spec.devices_per_node - 1}; "
                "choose device ids in that range or a smaller tensor_parallel_size")
        tp = self.tensor_parallel_size
        for count, what in ((model.num_kv_heads, "key/value heads"), (model.num_heads, "attention heads"),
                            (model.intermediate_size, "MLP columns (intermediate_size)")):
            if count % tp:
                choices = [d for d in range(1, spec.devices_per_node + 1) if model.num_kv_heads % d == 0
                           and model.num_heads % d == 0 and model.intermediate_size % d == 0]
                raise NPUConfigError(f"tensor_parallel_size={tp} does not divide the model's {count} {what}; "
                                     f"choose tensor_parallel_size in {choices}")
        if (problem := expert_parallel_problem(self.expert_parallel_size, model)) is not None:
            raise NPUConfigError(problem)
        if (problem := expert_tensor_parallel_problem(self.expert_tensor_parallel, tp, model)) is not None:
            raise NPUConfigError(problem)
        check_quantization(self.quantization, model, tp, spec, NPUConfigError,
                           expert_split=tp if self.expert_tensor_parallel else 1)
        limit = model.max_position_embeddings
        max_seq_len = self.max_seq_len or min(limit, 2048)
        if max_seq_len > limit:
            raise NPUConfigError(
                f"max_seq_len={max_seq_len} exceeds the model's position limit max_position_embeddings={limit}; "
                f"set max_seq_len <= {limit}"
            )
        chunk = self.prefill_chunk_size or min(128, max_seq_len)
        if chunk > max_seq_len:
            raise NPUConfigError(
                f"prefill_chunk_size={chunk} is larger than max_seq_len={max_seq_len}; set it in [1, {max_seq_len}]"
            )
        block = self.kvcache_block_size or max_seq_len
        if max_seq_len % block:
            raise NPUConfigError(
                f"max_seq_len={max_seq_len} is not a multiple of kvcache_block_size={block}; choose a block size "
                f"that divides max_seq_len (e.g. {_largest_divisor_at_most(max_seq_len, block)})"
            )
        attn_impl = self.attn_impl or ("flash_attn" if self.kvcache_partition_len or max_seq_len > 8192 else "eager")
        partition = self.kvcache_partition_len
        if attn_impl == "flash_attn":
            partition = partition or min(DEFAULT_PARTITION_LEN, max_seq_len)
            if max_seq_len % partition or (partition % block and block % partition):
                raise NPUConfigError(
                    f"kvcache_partition_len={partition} must divide max_seq_len={max_seq_len} and be a multiple or "
                    f"a divisor of kvcache_block_size={block}; e.g. kvcache_partition_len={block}"
                )
        num_blocks = self.kvcache_num_blocks or self.batch_size * (max_seq_len // block)
        if num_blocks < max_seq_len // block:
            raise NPUConfigError(
                f"kvcache_num_blocks={num_blocks} cannot hold one sequence of max_seq_len={max_seq_len} "
                f"({max_seq_len // block} blocks of {block}); set kvcache_num_blocks >= {max_seq_len // block}"
            )
        if self.enable_prefix_caching and model.has_sliding_layers:
            raise NPUConfigError(
                "enable_prefix_caching=True is not supported for models with sliding-window layers (their ring "
                "keeps only the window, so a cached prefix cannot restore it); set enable_prefix_caching=False"
            )
        sizes = self.decoder_batch_sizes or _default_decoder_batch_sizes(self.batch_size)
        dtype = self.dtype or (model.dtype if model.dtype in SUPPORTED_DTYPES else "float32")
        resolved = dataclasses.replace(self, max_seq_len=max_seq_len, prefill_chunk_size=chunk,
                                       kvcache_block_size=block, decoder_batch_sizes=sizes, dtype=dtype,
                                       attn_impl=attn_impl, kvcache_partition_len=partition,
                                       kvcache_num_blocks=num_blocks)
        if self.kvcache_num_blocks is None:
            from optimum_npu.models.decoder.memory_plan import blocks_that_fit

            fitting = blocks_that_fit(model, resolved, spec)
            if fitting >= resolved.blocks_per_sequence:
                resolved = dataclasses.replace(resolved, kvcache_num_blocks=min(num_blocks, fitting))
        return resolved


def _default_decoder_batch_sizes(batch_size: int) -> tuple[int, ...]:
    sizes = {batch_size}
    size = 1
    while size < batch_size:
        sizes.add(size)
        size *= 2
    return tuple(sorted(sizes))


def _largest_divisor_at_most(n: int, bound: int) -> int:
    return max(d for d in range(1, min(n, bound) + 1) if n % d == 0)
