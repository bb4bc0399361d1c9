"""The seq2seq family's compile knobs: encoder buckets, decoder envelope, paged self-attention KV."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from typing import Any

from optimum_npu.device.buckets import Bucket
from optimum_npu.device.spec import PRESETS
from optimum_npu.models.decoder.npu_config import SUPPORTED_DTYPES, NPUConfigError
from optimum_npu.models.decoder.stored_config import short_repr
from optimum_npu.models.knobs import check_rank_devices, coerce_knobs
from optimum_npu.models.encoder.npu_config import _sizes

#: Bucket kinds: the encoder grid, the decoder prompt chunk (with the cross-KV write), one-token decode steps.
ENCODER_KIND, PREFILL_KIND, DECODE_KIND = "encoder", "prefill", "decode"
#: Runtime options: chosen at load time, not stored as compile knobs.
RUNTIME_OPTIONS = ("device", "profile")
#: Largest decoder length / rows a stored artifact may claim (bounds untrusted knobs before allocation).
MAX_DECODER_LEN, MAX_ROWS = 1 << 16, 1024
#: Most devices one encoder-decoder model is split across (``tensor_parallel_size``, see ``tp_plan.py``).
MAX_TENSOR_PARALLEL = 64


def _positive(name: str, value: Any, example: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise NPUConfigError(f"{name}={short_repr(value)} is invalid: it must be an integer >= 1, e.g. {example}")


@dataclass(frozen=True)
class NPUSeq2SeqConfig:
    """Compile configuration of an encoder-decoder model (T5, BART, Whisper).

    Args:
        encoder_seq_lens: encoder token buckets; an input runs on the smallest one >= its width (Whisper: its
            fixed mel window, set by ``resolve``). Default: [32, 128] capped at the model's position limit.
        encoder_batch_sizes: encoder batch buckets (one encoder graph per batch size x length).
        max_seq_len: the longest decoder sequence (prompt + generated tokens).
        batch_size: decoder rows held at once (batch x num_beams x num_return_sequences); one cross-attention
            slot and ``max_seq_len`` of paged KV each.
        decoder_batch_sizes: the decode graphs; a step runs on the smallest >= its rows.
        prefill_chunk_size: tokens of the decoder-prompt graph (T5/BART: 1 start token; Whisper: 4 forced ones).
        kvcache_block_size: tokens per block of the paged self-attention KV pool.
        kvcache_partition_len: flash-attention partition of decoder self-attention (0: eager).
        dtype, npu: as for decoders.
        tensor_parallel_size: devices the model is split across (attention heads of the encoder and decoder, their
            feed-forward columns, the logits vocabulary, the self-attention pool and cross-attention slots by heads;
            ``tp_plan.py``); it must divide the attention heads.
        device: runtime option: the simulated device of rank 0 (rank r on ``device + r``) or one id per rank.
        profile: runtime option: record every op on its device's track.
    """

    encoder_seq_lens: tuple[int, ...] | None = None
    encoder_batch_sizes: tuple[int, ...] = (1, 4)
    max_seq_len: int = 64
    batch_size: int = 4
    decoder_batch_sizes: tuple[int, ...] = (1, 4)
    prefill_chunk_size: int = 4
    kvcache_block_size: int = 16
    kvcache_partition_len: int = 0
    dtype: str = "float32"
    npu: str = "atom"
    tensor_parallel_size: int = 1
    device: int | tuple[int, ...] = field(default=0, metadata={"runtime": True})
    profile: bool = field(default=False, metadata={"runtime": True})

    def __post_init__(self):
        if self.encoder_seq_lens is not None:
            object.__setattr__(self, "encoder_seq_lens", _sizes("encoder_seq_lens", self.encoder_seq_lens, "[32, 128]"))
        object.__setattr__(self, "encoder_batch_sizes", _sizes("encoder_batch_sizes", self.encoder_batch_sizes, "[1, 4]"))
        object.__setattr__(self, "decoder_batch_sizes", _sizes("decoder_batch_sizes", self.decoder_batch_sizes, "[1, 4]"))
        for name, example in (("max_seq_len", "64"), ("batch_size", "4"), ("prefill_chunk_size", "4"),
                              ("kvcache_block_size", "16")):
            _positive(name, getattr(self, name), example)
        if self.max_seq_len > MAX_DECODER_LEN or self.batch_size > MAX_ROWS:
            raise NPUConfigError(f"max_seq_len={self.max_seq_len} / batch_size={self.batch_size} exceed the limits "
                                 f"{MAX_DECODER_LEN} / {MAX_ROWS}; use smaller values")
        if self.decoder_batch_sizes[-1] > self.batch_size:
            raise NPUConfigError(f"decoder_batch_sizes={list(self.decoder_batch_sizes)} holds a batch larger than "
                                 f"batch_size={self.batch_size}; raise batch_size or drop that decode batch")
        if self.prefill_chunk_size > self.max_seq_len:
            raise NPUConfigError(f"prefill_chunk_size={self.prefill_chunk_size} exceeds max_seq_len="
                                 f"{self.max_seq_len}; use a chunk <= max_seq_len")
        partition = self.kvcache_partition_len
        if not isinstance(partition, int) or isinstance(partition, bool) or partition < 0 or (
                partition and (partition % self.kvcache_block_size or self.max_seq_len % partition)):
            raise NPUConfigError(f"kvcache_partition_len={short_repr(partition)} is invalid: 0 (eager) or a multiple "
                                 f"of kvcache_block_size={self.kvcache_block_size} dividing max_seq_len="
                                 f"{self.max_seq_len}")
        if isinstance(self.npu, os.PathLike):
            object.__setattr__(self, "npu", os.fspath(self.npu))
        if not isinstance(self.npu, str):
            raise NPUConfigError(f"npu={short_repr(self.npu)} is invalid: give a preset name {sorted(PRESETS)} or "
                                 "the path of a JSON spec file")
        if self.dtype not in SUPPORTED_DTYPES:
            raise NPUConfigError(f"dtype={short_repr(self.dtype)} is invalid: use one of {list(SUPPORTED_DTYPES)}")
        size = self.tensor_parallel_size
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_TENSOR_PARALLEL:
            raise NPUConfigError(f"tensor_parallel_size={short_repr(size)} is invalid: give the devices the model is "
                                 f"split across, 1 to {MAX_TENSOR_PARALLEL}, dividing its attention heads")
        if isinstance(self.device, list):
            object.__setattr__(self, "device", tuple(self.device))
        check_rank_devices(self.device, size, self.profile)

    @classmethod
    def coerce(cls, value: Any) -> "NPUSeq2SeqConfig":
        """An ``NPUSeq2SeqConfig`` from itself, a dict of its fields or None (defaults)."""
        return coerce_knobs(cls, value, "seq2seq", "{'encoder_seq_lens': [32, 128], 'max_seq_len': 64}")

    def resolve(self, max_positions: int | None, fixed_encoder_len: int | None = None,
                max_target_positions: int | None = None) -> "NPUSeq2SeqConfig":
        """Fills the default encoder buckets (``fixed_encoder_len``: Whisper's one mel window) and checks the
        buckets against the model's position limits."""
        if fixed_encoder_len is not None:
            if self.encoder_seq_lens not in (None, (fixed_encoder_len,)):
                raise NPUConfigError(f"encoder_seq_lens={list(self.encoder_seq_lens)}: this model's encoder takes a "
                                     f"fixed window of {fixed_encoder_len} frames; leave encoder_seq_lens out")
            seq_lens = (fixed_encoder_len,)
        else:
            limit = max_positions or 512
            seq_lens = self.encoder_seq_lens or tuple(sorted({min(s, limit) for s in (32, 128)}))
            if max_positions and seq_lens[-1] > max_positions:
                raise NPUConfigError(f"encoder_seq_lens={list(seq_lens)} holds {seq_lens[-1]}, longer than the "
                                     f"model's {max_positions} positions; use lengths <= {max_positions}")
        if max_target_positions and self.max_seq_len > max_target_positions:
            raise NPUConfigError(f"max_seq_len={self.max_seq_len} exceeds the decoder's {max_target_positions} "
                                 f"positions; use max_seq_len <= {max_target_positions}")
        return NPUSeq2SeqConfig(**{**self.to_dict(), **self.runtime(), "encoder_seq_lens": seq_lens})

    @property
    def device_ids(self) -> list[int]:
        """The simulated device of each tensor-parallel rank."""
        if isinstance(self.device, tuple):
            return list(self.device)
        return [self.device + rank for rank in range(self.tensor_parallel_size)]

    @property
    def blocks_per_sequence(self) -> int:
        return math.ceil(self.max_seq_len / self.kvcache_block_size)

    @property
    def kvcache_num_blocks(self) -> int:
        """Every row can hold ``max_seq_len`` tokens at once."""
        return self.batch_size * self.blocks_per_sequence

    def buckets(self) -> list[Bucket]:
        """Encoder grid ``encoder_b<B>_s<S>``, ``prefill`` (batch 1), ``decoder_batch_<n>``."""
        encoder = [Bucket(f"encoder_b{b}_s{s}", ENCODER_KIND, b, s)
                   for b in self.encoder_batch_sizes for s in (self.encoder_seq_lens or ())]
        if not encoder:
            raise NPUConfigError("encoder_seq_lens is not resolved against the model yet (NPUSeq2SeqConfig.resolve)")
        return encoder + [Bucket("prefill", PREFILL_KIND, 1, self.prefill_chunk_size)] + [
            Bucket(f"decoder_batch_{n}", DECODE_KIND, n, 1) for n in self.decoder_batch_sizes]

    def graph_names(self) -> list[str]:
        return [bucket.name for bucket in self.buckets()]

    def to_dict(self) -> dict[str, Any]:
        """The compile knobs (runtime options left out), JSON-ready."""
        return {f.name: (list(v) if isinstance(v, tuple) else v) for f in fields(self)
                if f.name not in RUNTIME_OPTIONS for v in (getattr(self, f.name),)}

    def runtime(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in RUNTIME_OPTIONS}
