"""A step runner that runs nothing: the serving scheduler's ``StepRunner`` interface on graph costs alone.

``runtime.scheduler.Scheduler`` asks its runner to admit, prefill a chunk, decode a batch and finish
sequences, and reads the simulated seconds of each graph call from ``runner.stats.steps``. This runner
answers the same calls with the block manager's real bookkeeping (admission, prefix reuse, preemption
are the scheduler's and block manager's own code) but, instead of executing a graph, it records the
simulated seconds the graph's cost model gives for the call's query positions, plus the host-link
copies of its inputs and outputs, exactly as ``DeviceEngine.run`` accounts them. It returns no logits:
requests served by it carry a ``choose`` that appends a dummy token, and their length comes from the
workload (``max_new_tokens``), so no end-of-sequence token is ever sampled.

Costs come from either a loaded engine (``timings_from_engine``: the compiled graphs' own cost models)
or the planner's weightless captures extrapolated by layer (``timings_from_plan``), so an 8B model is
scheduled without weights or arithmetic.

Speed: a decode step's cost is memoised. The cost model's attention cost of a call depends on the query
positions only through the keys it reads (each row's context rounded up to the flash partition, or the
whole static cache with eager attention) and the count of real query tokens (``device/cost.py``,
``attention_cost``); the memo key is exactly those two numbers, and ``tests/test_serving_sim.py``
checks the result against the engine's own accounting call for call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from optimum_npu.device.buckets import Bucket, smallest_bucket
from optimum_npu.device.spec import NPUSpec
from optimum_npu.runtime.block_manager import BlockManager
from optimum_npu.runtime.sequence import Sequence, SequenceStatus
from optimum_npu.runtime.stats import NPUStats, StepRecord

#: The token a cost-only run "generates" (its value matters only to prefix-cache hashing).
DUMMY_TOKEN = 0


def dummy_choose(logits, seq) -> tuple[int, None]:
    """The ``Request.choose`` of a cost-only run: the dummy token, no log-probabilities."""
    return DUMMY_TOKEN, None


class CallCost(Protocol):
    def call_seconds(self, positions: torch.Tensor) -> tuple[float, float]: ...


@dataclass(frozen=True)
class GraphTiming:
    """What one graph call costs: the device cost model and the host-link seconds of its inputs/outputs."""

    cost: CallCost
    host_seconds: float


def timings_from_engine(engine) -> dict[str, GraphTiming]:
    """The timings of a loaded engine's graphs (its cost models; host bytes from the graphs' input specs)."""
    from optimum_npu.planner.extrapolate import host_bytes

    return {name: GraphTiming(engine.costs[name], sum(host_bytes(graph)) / engine.spec.host_link_bandwidth)
            for name, graph in engine.graphs.items()}


def timings_from_plan(costs: dict, spec: NPUSpec) -> dict[str, GraphTiming]:
    """The timings of the planner's extrapolated graph costs (``extrapolate.ExtrapolatedCost`` per graph)."""
    return {name: GraphTiming(cost, cost.host_seconds(spec)) for name, cost in costs.items()}


class CostOnlyRunner:
    """``StepRunner``'s interface for ``Scheduler``, timed by cost models instead of executed.

    Args:
        timings: ``{graph name: GraphTiming}`` holding ``prefill`` and ``decoder_batch_<n>`` for every
            entry of ``decode_batches``.
        blocks: the block manager of the simulated KV pool.
        max_seq_len: the longest sequence the graphs hold.
        chunk: prefill chunk size (tokens of the ``prefill`` graph).
        decode_batches: the compiled decode batch sizes (the decode buckets).
        partition_len: flash-attention partition length, 0 for eager attention (the memo key, module doc).
        spec_name: named in the stats.
        memo: the call-cost memo to use; runners of the same timings may share one (default: their own).
    """

    def __init__(self, timings: dict[str, GraphTiming], blocks: BlockManager, max_seq_len: int, chunk: int,
                 decode_batches: list[int], partition_len: int, spec_name: str = "cost-only",
                 memo: dict | None = None):
        missing = [n for n in ["prefill", *(f"decoder_batch_{b}" for b in decode_batches)] if n not in timings]
        if missing or not decode_batches:
            raise ValueError(f"cost-only runner: no cost for graphs {missing}; give the costs of 'prefill' and "
                             "of every decode batch")
        self.timings = timings
        self.blocks = blocks
        self.max_seq_len = max_seq_len
        self.chunk = chunk
        self.partition_len = partition_len
        self.decode_buckets = [Bucket(f"decoder_batch_{b}", "decode", b, 1) for b in sorted(set(decode_batches))]
        self.stats = NPUStats(device="cost-only", spec=spec_name)
        self._memo: dict[tuple, float] = {} if memo is None else memo
        self._bucket_of: dict[int, Bucket] = {}

    def decode_bucket(self, active: int) -> Bucket:
        """The smallest decode bucket holding ``active`` sequences (looked up once per count)."""
        bucket = self._bucket_of.get(active)
        if bucket is None:
            bucket = smallest_bucket(self.decode_buckets, batch=active)
            if bucket is None:
                raise ValueError(f"{active} sequences exceed the largest decode batch "
                                 f"({self.decode_buckets[-1].batch})")
            self._bucket_of[active] = bucket
        return bucket

    # ---- sequences (the block manager's own bookkeeping) ---------------------------------------
    def admit(self, seq: Sequence) -> int:
        cached = self.blocks.allocate(seq)
        self.stats.prefix_hit_tokens += cached
        return cached

    def finish(self, seq: Sequence) -> None:
        self.blocks.free(seq)
        seq.status = SequenceStatus.FINISHED

    # ---- steps ---------------------------------------------------------------------------------
    def prefill(self, seq: Sequence):
        """Accounts one prefill chunk of ``seq``; returns a non-None marker once its prompt is all written."""
        start = seq.num_computed
        count = min(self.chunk, seq.num_uncomputed)
        if count <= 0:
            raise ValueError(f"request {seq.request_id!r} has no token left to prefill")
        self._record("prefill", "prefill", self._keys(start + count), count, 1, lambda: [start + count])
        self.blocks.written(seq, count)
        return True if seq.num_uncomputed == 0 else None

    def decode(self, seqs: list[Sequence]) -> list[None]:
        """Accounts one decode step of ``seqs`` on the smallest decode bucket; returns one empty row each."""
        bucket = self.decode_bucket(len(seqs))
        self.blocks.append(seqs)
        partition = self.partition_len   # the memo key's keys, summed without building the contexts (module doc)
        keys = partition * sum(-(-(seq.num_computed + 1) // partition) for seq in seqs) if partition else 0
        self._record(bucket.name, "decode", keys, len(seqs), bucket.batch, lambda: [s.num_computed + 1 for s in seqs])
        self.blocks.written_one_each(seqs)
        return [None] * len(seqs)

    # ---- internals -----------------------------------------------------------------------------
    def _keys(self, context: int) -> int:
        partition = self.partition_len
        return -(-context // partition) * partition if partition else 0

    def _record(self, graph: str, phase: str, keys: int, new_tokens: int, rows: int, contexts) -> None:
        """Appends the call's record; ``keys``: keys read (the memo key), ``contexts()``: each row's context,
        built only when the call's cost is not memoised yet."""
        key = (graph, keys, new_tokens)
        seconds = self._memo.get(key)
        if seconds is None:
            seconds = self._memo[key] = self.timings[graph].cost.call_seconds(
                _positions(phase, contexts(), new_tokens, rows, self.chunk))[0]
        self.stats.steps.append(StepRecord(phase, graph, new_tokens if phase == "decode" else 1, new_tokens,
                                           seconds, 0.0, self.timings[graph].host_seconds))


def _positions(phase: str, contexts: list[int], new_tokens: int, rows: int, chunk: int) -> torch.Tensor:
    """Query positions [rows, tokens] of a call (-1 = padding), as the real runner passes them."""
    if phase == "prefill":
        end = contexts[0]
        positions = torch.full((1, chunk), -1, dtype=torch.long)
        positions[0, :new_tokens] = torch.arange(end - new_tokens, end)
        return positions
    return torch.tensor([c - 1 for c in contexts] + [-1] * (rows - len(contexts)), dtype=torch.long).view(rows, 1)
