"""The step runner: runs "these sequences prefill a chunk, those decode" on a decoder's compiled graphs.

Prefill runs one sequence per call on the ``prefill`` bucket (batch 1, ``tokens`` = the chunk),
starting after any prefix already in the cache. Decode runs the given sequences together on the
smallest compiled ``decode`` bucket that holds them, padding the rest (padding rows have position
-1: they neither write nor read the cache). Buckets come from the graphs' attributes. Every block a
step needs is reserved before any graph runs, so a full pool refuses a step instead of failing
halfway through it.
"""

from __future__ import annotations

from typing import Callable

import torch

from optimum_npu.device.buckets import Bucket, buckets_of_kind, smallest_bucket
from optimum_npu.device.engine import DeviceEngine
from optimum_npu.device.kernels.moe import record_routing
from optimum_npu.runtime.block_manager import BlockManager
from optimum_npu.runtime.sequence import Sequence, SequenceStatus
from optimum_npu.runtime.stats import NPUStats, StepRecord

#: Token axis of the per-token prefill extras that do not lead with it (default 0).
TOKEN_AXIS = {"rope_positions": 1, "deepstack_embeds": 1}


class StepRunner:
    """Runs prefill chunks and decode steps of sequences on a loaded decoder.

    Args:
        engine: the decoder's graphs loaded on their devices (``prefill`` and ``decode`` buckets).
        blocks: the block manager of the engine's paged KV pool.
        max_seq_len: the longest sequence the graphs hold.
        blocks_per_sequence: width of a block-table row.
        new_stats: makes the empty stats a call starts with (``reset_stats``).
    """

    def __init__(self, engine: DeviceEngine, blocks: BlockManager, max_seq_len: int, blocks_per_sequence: int,
                 new_stats: Callable[[], NPUStats]):
        self.engine = engine
        self.blocks = blocks
        self.max_seq_len = max_seq_len
        self.blocks_per_sequence = blocks_per_sequence
        self._new_stats = new_stats
        prefill = buckets_of_kind(engine.graphs, "prefill")
        self.decode_buckets = buckets_of_kind(engine.graphs, "decode")
        if len(prefill) != 1 or prefill[0].batch != 1 or not self.decode_buckets:
            raise ValueError("a decoder needs one batch-1 'prefill' graph and at least one 'decode' graph; "
                             "recompile the model")
        self.prefill_bucket = prefill[0]
        every = buckets_of_kind(engine.graphs, "prefill_all")  # compiled with prefill_logits="all"
        self.all_logits_bucket = every[0] if every else None
        self.chunk = self.prefill_bucket.tokens
        self.stats = new_stats()
        #: When a list: ``(tokens, active, outputs after the logits)`` of every graph call is appended to it
        #: (seq2seq: the alignment heads' cross-attention of Whisper's token timestamps).
        self.extra_outputs: list[tuple[int, int, tuple]] | None = None

    def reset_stats(self) -> NPUStats:
        """Starts new stats (they describe one call of the caller: a generate(), a server window...)."""
        self.stats = self._new_stats()
        return self.stats

    def check_length(self, length: int) -> None:
        """Refuses a sequence longer than the graphs hold, before any compute."""
        if length > self.max_seq_len:
            raise ValueError(f"sequence length {length} exceeds max_seq_len={self.max_seq_len}; "
                             "recompile with a larger max_seq_len or shorten the input")

    def decode_bucket(self, active: int) -> Bucket:
        """The smallest compiled decode batch that holds ``active`` sequences."""
        bucket = smallest_bucket(self.decode_buckets, batch=active)
        if bucket is None:
            largest = self.decode_buckets[-1].batch
            raise ValueError(f"{active} sequences exceed the largest decode batch ({largest}); "
                             f"compile with batch_size >= {active}")
        return bucket

    # ---- sequences ----------------------------------------------------------------------------
    def admit(self, seq: Sequence) -> int:
        """Gives a sequence its blocks and slot (reusing cached prefix blocks); returns the cached tokens."""
        self.check_length(len(seq))
        cached = self.blocks.allocate(seq)
        self.stats.prefix_hit_tokens += cached
        return cached

    def finish(self, seq: Sequence) -> None:
        """Returns a sequence's blocks (cached blocks stay reusable) and marks it finished."""
        self.blocks.free(seq)
        seq.status = SequenceStatus.FINISHED

    # ---- steps --------------------------------------------------------------------------------
    def step(self, prefill: list[Sequence] = (), decode: list[Sequence] = ()) -> dict:
        """One scheduler step: one prefill chunk of each ``prefill`` sequence, one decode step of ``decode``.

        Returns:
            ``{request_id: logits [V]}`` for every sequence whose next-token logits are known after the step
            (decoded ones, and those whose prefill reached their last token).
        """
        if decode:
            self.blocks.append(list(decode))   # all or none: a full pool raises before any graph runs
        ready = {}
        for seq in prefill:
            logits = self.prefill(seq)
            if logits is not None:
                ready[seq.request_id] = logits
        if decode:
            ready.update(zip((s.request_id for s in decode), self.decode(list(decode))))
        return ready

    def require_all_logits(self) -> Bucket:
        """The ``prefill_all`` bucket; a ValueError saying how to compile it when the artifact has none."""
        if self.all_logits_bucket is None:
            raise ValueError("logits of every position need the prefill_all_logits graph: recompile with "
                             "npu_config={'prefill_logits': 'all'}")
        return self.all_logits_bucket

    def prefill(self, seq: Sequence, all_positions: bool = False) -> torch.Tensor | None:
        """Writes the next chunk of ``seq``'s uncomputed tokens; returns its last logits [V] once all are written
        (``all_positions``: on the ``prefill_all`` graph, this chunk's logits [tokens, V] at every call)."""
        bucket = self.require_all_logits() if all_positions else self.prefill_bucket
        chunk, start = self.chunk, seq.num_computed
        part = seq.token_ids[start:start + chunk]
        count = len(part)
        if not count:
            raise ValueError(f"request {seq.request_id!r} has no token left to prefill")
        input_ids = torch.zeros(1, chunk, dtype=torch.long)
        input_ids[0, :count] = torch.tensor(part, dtype=torch.long)
        positions = torch.full((1, chunk), -1, dtype=torch.long)
        positions[0, :count] = torch.arange(start, start + count)
        inputs = {"input_ids": input_ids, "positions": positions, "block_table": self._block_table([seq]),
                  "slots": torch.tensor([seq.slot]),
                  "logits_index": torch.arange(chunk).view(1, chunk) if all_positions else torch.tensor([count - 1])}
        for name, values in (seq.extras or {}).items():
            axis = TOKEN_AXIS.get(name, 0)
            values = _covering(name, values, len(seq), seq.rope_delta, axis)
            inputs[name] = _chunk_of(values, start, count, chunk, token_axis=axis)
        for name, value in (seq.request_inputs or {}).items():
            inputs[name] = value.unsqueeze(0)
        logits = self._run(bucket, inputs, active=1, tokens=count)
        self.blocks.written(seq, count)
        if all_positions:
            return logits[0, :count]                                            # [count, V]
        return logits[0] if seq.num_uncomputed == 0 else None

    def decode(self, seqs: list[Sequence]) -> torch.Tensor:
        """One decode step: writes each sequence's last token and returns the next logits [n, V].

        Blocks for every sequence are reserved first (all or none: ``KVCacheFullError`` changes nothing).
        """
        if any(seq.num_uncomputed != 1 for seq in seqs):
            raise ValueError("decode needs sequences whose tokens are all in the cache but the last one; "
                             "prefill them first")
        active = len(seqs)
        self.check_length(max(len(seq) for seq in seqs))
        bucket = self.decode_bucket(active)
        self.blocks.append(seqs)
        pad = bucket.batch - active
        rows = seqs + [seqs[0]] * pad
        positions = [seq.num_computed for seq in seqs]
        inputs = {"input_ids": torch.tensor([s.token_ids[-1] for s in seqs] + [0] * pad, dtype=torch.long).view(bucket.batch, 1),
                  "positions": torch.tensor(positions + [-1] * pad, dtype=torch.long).view(bucket.batch, 1),
                  "block_table": self._block_table(rows),
                  "slots": torch.tensor([s.slot for s in rows], dtype=torch.long),
                  "logits_index": torch.zeros(bucket.batch, dtype=torch.long)}
        if seqs[0].rope_delta is not None:   # M-RoPE: each row's rotary position, the same on all 3 axes
            rope = [p + s.rope_delta for p, s in zip(positions, seqs)] + [0] * pad
            inputs["rope_positions"] = torch.tensor(rope, dtype=torch.long).view(1, bucket.batch, 1).expand(
                3, bucket.batch, 1).contiguous()
        logits = self._run(bucket, inputs, active, active)[:active]
        self.blocks.written_one_each(seqs)
        return logits

    # ---- internals ----------------------------------------------------------------------------
    def _block_table(self, seqs: list[Sequence]) -> torch.Tensor:
        width = self.blocks_per_sequence
        return torch.tensor([self.blocks.table_row(seq, width) for seq in seqs], dtype=torch.int32)

    def _run(self, bucket: Bucket, inputs: dict[str, torch.Tensor], active: int, tokens: int) -> torch.Tensor:
        phase = "prefill" if bucket.kind == "prefill_all" else bucket.kind     # every-position prefill is prefill
        with record_routing() as routing:
            outputs, call = self.engine.run(bucket.name, inputs, phase, positions=inputs["positions"])
        logits, *extra = outputs if isinstance(outputs, tuple) else (outputs,)
        if self.extra_outputs is not None:
            self.extra_outputs.append((tokens, active, tuple(extra)))
        self.stats.record(StepRecord(phase, bucket.name, active, tokens, call.seconds, call.attention_seconds,
                                     call.host_seconds, tuple(routing)))
        self.stats.kv_blocks_peak = max(self.stats.kv_blocks_peak, self.blocks.used_blocks)
        return logits


def _covering(name: str, values: torch.Tensor, length: int, rope_delta: int | None, token_axis: int) -> torch.Tensor:
    """A prompt's per-token extras extended over ``length`` tokens, for a sequence prefilled again after a
    preemption with its generated tokens: those are text (rotary position = cache position + ``rope_delta`` on
    every axis; no visual embedding)."""
    have = values.shape[token_axis]
    if have >= length:
        return values
    if name == "rope_positions":                                             # [3, n] -> [3, length]
        tail = (torch.arange(have, length) + (rope_delta or 0)).expand(values.shape[0], -1)
    else:
        shape = list(values.shape)
        shape[token_axis] = length - have
        tail = values.new_zeros(shape)
    return torch.cat([values, tail.to(values.dtype)], dim=token_axis)


def _chunk_of(values: torch.Tensor, start: int, count: int, chunk: int, token_axis: int) -> torch.Tensor:
    """Tokens ``[start, start+count)`` of a per-token tensor, zero-padded to ``chunk``, with a batch
    axis of 1 inserted before the token axis ([3, n] -> [3, 1, C]; [n, E] -> [1, C, E]; [n] -> [1, C];
    [L, n, E] -> [L, 1, C, E])."""
    part = values.narrow(token_axis, start, count)
    shape = list(values.shape)
    shape[token_axis] = chunk
    out = values.new_zeros(shape)
    out.narrow(token_axis, 0, count).copy_(part)
    return out.unsqueeze(token_axis)
