"""Continuous batching over a decoder's compiled buckets.

Requests join and leave between steps. The policy is the one NPU serving stacks use with static
shapes (vllm-rbln, Furiosa-LLM):

* **One prefill at a time**, at batch 1 on the ``prefill`` graph, one chunk of ``prefill_chunk_size``
  tokens per step, interleaved with decode: a step runs the prefill chunk (when the decode rows plus
  the chunk's tokens fit ``max_num_batched_tokens``, or when the prefill was held back the step
  before) and one decode step of every prefilled sequence.
* **Decode on the smallest compiled decode batch** >= the running sequences, padded.
* **Admission** (the head of the waiting queue, first come first served) when no prefill is in
  flight, a row is free (``batch_size``) and the block manager can hold its tokens now; cached
  prefix blocks are reused, so only the rest is prefilled.
* **Preemption by recomputation**: when a decode step needs blocks the pool does not have, the
  newest admitted sequence is preempted (its blocks freed, its tokens kept) and re-queued at the
  head of the waiting queue; it is prefilled again when it is admitted again.
* A request that can never fit (prompt + max tokens beyond ``max_seq_len`` or beyond the whole
  pool) is refused by ``add`` before it is queued.

The **simulated clock** (``clock_s``) advances by the simulated time of every graph call; the caller
advances it over idle periods (``advance``). Arrival, first-token and per-token times of requests are
read from it, so TTFT / ITL are what the NPU would show for the same interleaving of work.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable

import torch

from optimum_npu.runtime.block_manager import BlockManager
from optimum_npu.runtime.request import Request, RequestTooLongError
from optimum_npu.runtime.runner import StepRunner
from optimum_npu.runtime.sampler import Sampler
from optimum_npu.runtime.scheduler_stats import SchedulerStats
from optimum_npu.runtime.sequence import SequenceStatus


class Scheduler:
    """Runs many requests together on one loaded decoder.

    Args:
        runner: the step runner of the decoder (its block manager is the pool requests share).
        max_num_batched_tokens: tokens one step may carry (decode rows + one prefill chunk); default: the
            prefill chunk plus the largest decode batch, so a prefill chunk always fits beside decode.
        on_finish: called with every request that finishes or is aborted (metrics).
    """

    def __init__(self, runner: StepRunner, max_num_batched_tokens: int | None = None,
                 on_finish: Callable[[Request], None] | None = None):
        self.runner = runner
        self.blocks: BlockManager = runner.blocks
        self.max_batch = runner.decode_buckets[-1].batch
        if self.blocks.max_sequences is not None:
            self.max_batch = min(self.max_batch, self.blocks.max_sequences)
        default_budget = runner.chunk + self.max_batch
        self.max_num_batched_tokens = max_num_batched_tokens or default_budget
        if self.max_num_batched_tokens < runner.chunk:
            raise ValueError(f"max_num_batched_tokens={self.max_num_batched_tokens} is smaller than one prefill "
                             f"chunk ({runner.chunk} tokens); use at least {runner.chunk} (default {default_budget})")
        self.on_finish = on_finish
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []      # admitted, oldest first (the last one is preempted first)
        self.clock_s = 0.0
        self.stats = SchedulerStats()
        self.sampler = Sampler()
        self._prefill_held = False
        #: Share of the KV pool's blocks held by running sequences, refreshed after every change (a plain value,
        #: so another thread, e.g. a metrics scrape, can read it while this one runs).
        self.kv_cache_usage = 0.0

    # ---- requests -----------------------------------------------------------------------------
    def check(self, prompt_tokens: int, max_tokens: int) -> None:
        """Refuses a request that can never be served (``RequestTooLongError`` with the numbers)."""
        total = prompt_tokens + max_tokens
        limit = self.runner.max_seq_len
        if total > limit:
            raise RequestTooLongError(
                f"prompt ({prompt_tokens} tokens) + max_tokens ({max_tokens}) = {total} tokens exceeds the compiled "
                f"max_seq_len={limit}; shorten the prompt or lower max_tokens", prompt_tokens, max_tokens, limit)
        pool_tokens = self.blocks.num_blocks * self.blocks.block_size
        if self.blocks.blocks_for(total) > self.blocks.num_blocks:
            raise RequestTooLongError(
                f"prompt ({prompt_tokens} tokens) + max_tokens ({max_tokens}) = {total} tokens exceeds the whole KV "
                f"pool ({self.blocks.num_blocks} blocks of {self.blocks.block_size} = {pool_tokens} tokens); shorten "
                "the request or serve with more KV blocks", prompt_tokens, max_tokens, pool_tokens)

    def add(self, request: Request) -> None:
        """Queues a request (it arrives now on the simulated clock); refuses one that can never fit."""
        seq = request.seq
        self.check(len(seq), seq.sampling.max_new_tokens - len(seq.output_ids))
        request.arrival_s = self.clock_s
        seq.status = SequenceStatus.WAITING
        self.stats.prompt_tokens += seq.prompt_len
        self.waiting.append(request)

    def abort(self, request_id) -> Request | None:
        """Removes a request wherever it is and frees its blocks; returns it (None if unknown or done)."""
        for queue in (self.waiting, self.running):
            for request in queue:
                if request.request_id == request_id:
                    queue.remove(request)
                    self._finish(request, "abort")
                    self._refresh_usage()
                    return request
        return None

    def advance(self, seconds: float) -> None:
        """Moves the simulated clock over a period the device spent idle (no request to run)."""
        self.clock_s += max(0.0, seconds)

    def account(self, seconds: float) -> None:
        """Adds device time spent outside the scheduler's graph calls (a visual encoder) to the clock."""
        self.clock_s += seconds
        self.stats.busy_s += seconds

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)


    # ---- one step -----------------------------------------------------------------------------
    def step(self) -> list[Request]:
        """Admits, preempts if needed, runs one prefill chunk and one decode step; returns the requests that
        got a token or finished in this step."""
        self._admit()
        decode = [r for r in self.running if r.prefilled]
        seqs = [r.seq for r in decode]
        while decode and not self.blocks.can_append(seqs):
            victim = self.running[-1]
            self._preempt(victim)
            if victim in decode:
                decode.remove(victim)
                seqs = [r.seq for r in decode]
        prefilling = next((r for r in self.running if not r.prefilled), None)
        touched: list[Request] = []
        if prefilling is not None:
            tokens = min(self.runner.chunk, prefilling.seq.num_uncomputed)
            if not decode or self._prefill_held or len(decode) + tokens <= self.max_num_batched_tokens:
                self._prefill_held = False
                logits = self._timed(lambda: self.runner.prefill(prefilling.seq))
                self.stats.prefill_tokens += tokens
                if logits is not None:
                    prefilling.prefilled = True
                    self._take(prefilling, logits)
                    touched.append(prefilling)
            else:
                self._prefill_held = True
        if decode:
            bucket = self.runner.decode_bucket(len(decode))
            self.stats.decode_rows += bucket.batch
            self.stats.padded_rows += bucket.batch - len(decode)
            logits = self._timed(lambda: self.runner.decode(seqs))
            for request, row in zip(decode, logits):
                self._take(request, row)
            touched.extend(decode)
        self._refresh_usage()
        return touched

    # ---- internals ----------------------------------------------------------------------------
    def _admit(self) -> None:
        if not self.waiting or len(self.running) >= self.max_batch or any(not r.prefilled for r in self.running):
            return
        head = self.waiting[0]
        if not self.blocks.can_allocate(head.seq):
            return
        self.waiting.popleft()
        cached = self.runner.admit(head.seq)
        head.cached_tokens = cached
        self.stats.prefix_queries += len(head.seq)
        self.stats.prefix_hits += cached
        self.running.append(head)

    def _refresh_usage(self) -> None:
        self.kv_cache_usage = self.blocks.used_blocks / self.blocks.num_blocks

    def _preempt(self, request: Request) -> None:
        self.running.remove(request)
        self.blocks.preempt(request.seq)
        request.prefilled = False
        request.preemptions += 1
        self.stats.preemptions += 1
        self.waiting.appendleft(request)

    def _timed(self, run: Callable[[], torch.Tensor | None]):
        """Runs graph calls and advances the simulated clock by their simulated time (the records are consumed
        so a long-running server keeps no per-step history)."""
        steps = self.runner.stats.steps
        mark = len(steps)
        out = run()
        for record in steps[mark:]:
            self.clock_s += record.seconds + record.host_seconds
            self.stats.busy_s += record.seconds + record.host_seconds
            self.stats.buckets[record.graph] += 1
        del steps[mark:]
        return out

    def _take(self, request: Request, logits: torch.Tensor) -> None:
        """Chooses the next token from ``logits`` [V], records its times and finishes the request if it is done."""
        seq = request.seq
        if request.choose is not None:
            token, logprob = request.choose(logits, seq)
        else:
            token, logprob = self.sampler.sample(logits[None], [seq.sampling], [seq.request_id])[0], None
        done = seq.append(token)
        request.logprobs.append(logprob)
        request.token_times_s.append(self.clock_s)
        request.wall_token_times.append(time.monotonic())
        if request.first_token_s is None:
            request.first_token_s = self.clock_s
        self.stats.generation_tokens += 1
        stopped = request.stop_check is not None and request.stop_check(seq)   # always sees the last token
        if done:
            reason = "stop" if stopped or token in seq.sampling.stop_token_ids else "length"
        elif stopped:
            reason = "stop"
        elif len(seq.token_ids) >= self.runner.max_seq_len:
            reason = "length"
        else:
            return
        self.running.remove(request)
        self._finish(request, reason)

    def _finish(self, request: Request, reason: str) -> None:
        self.runner.finish(request.seq)
        self.sampler.forget(request.request_id)
        request.finish_reason = reason
        request.finished_s = self.clock_s
        self.stats.requests_finished += 1
        if self.on_finish is not None:
            self.on_finish(request)
