"""Run a compiled encoder-decoder model: encoder buckets, then the decoder on the runtime's paged KV.

One ``DeviceEngine`` holds every graph, so the caches the prefill graph writes (each row's cross-attention
keys/values, by slot) are the ones the decode graphs read. The encoder runs on the encoder family's
``EncoderRuntime`` (bucket per call, padding masked), the decoder on ``runtime/`` (``BlockManager``,
``StepRunner``, ``BatchSession``); beam search copies the self-attention blocks of a row's new parent beam
on the device (``reorder``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from optimum_npu.compile.artifact import ArtifactError
from optimum_npu.compile.weights import load_weights, stored_weight_bytes
from optimum_npu.device.buckets import buckets_of_kind
from optimum_npu.device.device import DeviceRegistry
from optimum_npu.device.engine import DeviceEngine, state_specs
from optimum_npu.device.profiler import Profiler
from optimum_npu.device.sizing import plan_graph_memory
from optimum_npu.models.encoder.feeds import TextFeed
from optimum_npu.models.encoder.runtime import EncoderRuntime, EncoderStats
from optimum_npu.models.encoder.tasks import FEATURE_EXTRACTION
from optimum_npu.models.seq2seq.alignment import as_cross_attentions, graph_head_order, step_weights
from optimum_npu.models.seq2seq.export import cross_len, encoder_inputs
from optimum_npu.models.seq2seq.mel_feed import MelWindowFeed
from optimum_npu.models.seq2seq.npu_config import ENCODER_KIND
from optimum_npu.models.seq2seq.stored import StoredSeq2Seq
from optimum_npu.runtime.block_manager import BlockManager
from optimum_npu.runtime.runner import StepRunner
from optimum_npu.runtime.session import BatchSession
from optimum_npu.runtime.stats import NPUStats
from optimum_npu.schema import weights_file


@dataclass
class Seq2SeqStats:
    """Simulated figures of the last ``generate()``: the encoder calls, the decoder (``prefill`` = each row's
    cross-attention keys/values written + its first token; ``decode`` = one step of every row), beam copies.
    ``memory`` and ``kv_pools`` are one device's (each tensor-parallel rank holds as much); ``collective_s`` is the
    all-reduce / all-gather part of the calls' time (0 on one device), from each graph's ``collective_seconds``."""

    encoder: EncoderStats
    decoder: NPUStats
    beam_copy_s: float = 0.0
    memory: dict[str, int] = field(default_factory=dict)
    kv_pools: dict[str, int] = field(default_factory=dict)
    graph_collective_s: dict[str, float] = field(default_factory=dict)

    @property
    def collective_s(self) -> float:
        """Seconds spent in collectives (Device HDMA + Device Sync) by the encoder, prefill and decode calls."""
        per_graph = self.graph_collective_s
        return (sum(per_graph.get(call.bucket.name, 0.0) for call in self.encoder.calls)
                + sum(per_graph.get(step.graph, 0.0) for step in self.decoder.steps))

    @property
    def encoder_s(self) -> float:
        return self.encoder.seconds

    @property
    def cross_kv_s(self) -> float:
        """The prefill calls: each writes its row's cross-attention keys/values (and decodes the prompt)."""
        return self.decoder.prefill_s

    @property
    def decode_s_per_token(self) -> float:
        return self.decoder.decode_s_per_token

    @property
    def total_s(self) -> float:
        return self.encoder_s + self.decoder.prefill_s + self.decoder.decode_s + self.beam_copy_s

    def __str__(self) -> str:
        return (f"encoder {self.encoder_s * 1e3:.3f} ms ({len(self.encoder.calls)} calls, padding waste "
                f"{self.encoder.padding_waste:.1%}), cross-KV + prompt {self.cross_kv_s * 1e3:.3f} ms, decode "
                f"{self.decode_s_per_token * 1e3:.3f} ms/step x {self.decoder.decode_steps}, beam copies "
                f"{self.beam_copy_s * 1e3:.3f} ms, collectives {self.collective_s * 1e3:.3f} ms; memory per device "
                f"{self.memory}")


class Seq2SeqRuntime:
    """A loaded seq2seq artifact on its device: ``encoder``, ``batch`` (the rows of one generate()), ``reorder``."""

    def __init__(self, root: Path, facts: StoredSeq2Seq, registry: DeviceRegistry | None = None):
        config, model = facts.config, facts.model
        self.config, self.model, self.facts = config, model, facts
        self.profiler = Profiler() if config.profile else None
        size = config.tensor_parallel_size
        self.engine = DeviceEngine(facts.graphs, facts.spec, config.device_ids, config.dtype,
                                   weights=lambda rank: load_weights(Path(root) / weights_file(rank, size)),
                                   weight_bytes=lambda rank: stored_weight_bytes(Path(root) / weights_file(rank, size)),
                                   owner=facts.architecture, registry=registry, profiler=self.profiler,
                                   error=ArtifactError)
        self.cross_len = cross_len(model, config)
        dtype = getattr(torch, config.dtype)
        feed = MelWindowFeed(model.num_mel_bins, config.encoder_seq_lens[0], dtype) if model.audio_frames else \
            TextFeed(tuple(encoder_inputs(model)), dtype, model.pad_token_id, model.vocab_size)
        self.encoder = EncoderRuntime(self.engine, buckets_of_kind(facts.graphs, ENCODER_KIND), FEATURE_EXTRACTION,
                                      ("last_hidden_state",), feed)
        self.blocks = BlockManager(config.kvcache_num_blocks, config.kvcache_block_size, False,
                                   max_sequences=config.batch_size)
        self.kv_pools = dict(plan_graph_memory(facts.graphs.values()).kv_pools)   # paged, cross (sliding: 0)
        self.runner = StepRunner(self.engine, self.blocks, config.max_seq_len, config.blocks_per_sequence,
                                 self._new_decoder_stats)
        self.batch = BatchSession(self.runner)
        self.stats = self._new_stats()

    def _new_decoder_stats(self) -> NPUStats:
        device = self.engine.devices[0]
        return NPUStats(device=device.name, spec=self.facts.spec.name, memory=dict(self.engine.memory),
                        memory_capacity=device.memory.capacity, kv_blocks_total=self.blocks.num_blocks,
                        kv_pools=dict(self.kv_pools))

    def _new_stats(self) -> Seq2SeqStats:
        collectives = {name: cost.collective_seconds for name, cost in self.engine.costs.items()}
        return Seq2SeqStats(EncoderStats(memory=dict(self.engine.memory)), self.runner.stats,
                            memory=dict(self.engine.memory), kv_pools=dict(self.kv_pools),
                            graph_collective_s=collectives)

    def start_call(self) -> Seq2SeqStats:
        """New stats for one generate() (the decoder's are renewed by ``BatchSession.start``)."""
        self.encoder.stats = EncoderStats(memory=dict(self.engine.memory))
        self.stats = self._new_stats()
        self.stats.encoder = self.encoder.stats
        return self.stats

    def encoder_rows(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> list[dict]:
        """Per row: the encoder output padded to the cross-attention length [L, E] and its additive mask [L]."""
        rows, width = hidden.shape[:2]
        if width > self.cross_len:
            raise ValueError(f"the encoder output has {width} positions but the cross-attention slots hold "
                             f"{self.cross_len}; recompile with encoder_seq_lens up to {width}")
        padded = hidden.new_zeros(rows, self.cross_len, hidden.shape[2])
        padded[:, :width] = hidden
        keep = torch.zeros(rows, self.cross_len, dtype=torch.bool)
        keep[:, :width] = True if attention_mask is None else attention_mask[:, :width].bool()
        mask = torch.where(keep, 0.0, torch.finfo(torch.float32).min)
        return [{"encoder_hidden": padded[row].to(self.engine_dtype), "encoder_mask": mask[row]}
                for row in range(rows)]

    def encode_audio(self, features: torch.Tensor) -> torch.Tensor:
        """Whisper: log-mel windows [B, mels, frames] -> encoder output [B, frames / 2, E], on the smallest encoder
        batch bucket (the encoder family's ``EncoderRuntime`` with the ``MelWindowFeed``: rows beyond the largest
        bucket run in several calls, padded rows are discarded)."""
        return self.encoder.run({"input_features": features})["last_hidden_state"]

    def require_alignment_heads(self) -> None:
        """Refuses cross-attention requests on graphs compiled without the alignment heads."""
        if not self.facts.alignment_heads:
            raise ValueError("cross-attention weights (Whisper's return_token_timestamps=True) need the alignment "
                             "heads compiled into the decoder graphs, and this artifact has none "
                             "(alignment_heads=[]); recompile with npu_config={'token_timestamps': True}")

    def cross_attentions(self, records: list, rows: int, prompt_len: int | None) -> tuple[torch.Tensor, ...]:
        """One step's ``cross_attentions`` (per layer [B, heads, S, L], only the alignment heads filled) from the
        runner's records of its graph calls."""
        order = graph_head_order(self.facts.alignment_heads, self.model.num_layers)
        return as_cross_attentions(step_weights(records, rows, prompt_len), order, self.model.num_layers,
                                   self.model.heads)

    @property
    def engine_dtype(self) -> torch.dtype:
        return getattr(torch, self.config.dtype)

    def reorder(self, parents: list[int]) -> None:
        """Beam search: row ``i`` continues the sequence of row ``parents[i]``: the self-attention blocks holding
        its tokens are copied from the parent's on the device (the cross-attention slots of one input's beams
        are the same). All sources are read before any row is written."""
        seqs = self.batch.sequences
        if parents == list(range(len(seqs))):
            return
        used = -(-seqs[0].num_computed // self.config.kvcache_block_size)
        width = self.config.blocks_per_sequence
        source, target = [], []
        for row, parent in enumerate(parents):
            if parent != row:
                source += self.blocks.table_row(seqs[parent], width)[:used]
                target += self.blocks.table_row(seqs[row], width)[:used]
        names = [n for n in state_specs(self.engine.graphs) if n.startswith(("key_cache_", "value_cache_"))]
        self.stats.beam_copy_s += self.engine.copy_state_rows(names, torch.tensor(source), torch.tensor(target))

    def release(self) -> None:
        self.engine.release()
