"""The continuous-batching scheduler driven directly on the runtime: requests join mid-decode and leave early,
preemption under a small pool, up-front refusal, prefix reuse, and tokens equal to eager Transformers."""

from __future__ import annotations

import pytest
import torch

from optimum_npu.runtime import BlockManager, Request, RequestTooLongError, SamplingParams, Scheduler, Sequence, StepRunner
from serving_fixtures import served_pair  # noqa: F401

PROMPTS = [[5, 9, 30, 31, 32, 77, 12], list(range(40, 80)), [200, 3, 3, 3, 9], list(range(100, 117))]


def make_scheduler(pair, num_blocks: int | None = None, prefix_caching: bool = True) -> Scheduler:
    runtime = pair.model._runtime
    config = runtime.config
    blocks = BlockManager(num_blocks or config.kvcache_num_blocks, config.kvcache_block_size, prefix_caching,
                          max_sequences=config.batch_size)
    runner = StepRunner(runtime.engine, blocks, config.max_seq_len, config.blocks_per_sequence, runtime.new_stats)
    return Scheduler(runner)


def greedy_request(request_id, prompt, max_new_tokens) -> Request:
    return Request(Sequence(request_id, prompt, sampling=SamplingParams(max_new_tokens=max_new_tokens)))


def eager(pair, prompt, max_new_tokens) -> list[int]:
    ids = torch.tensor([prompt])
    out = pair.ref.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                            do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def run_until_done(scheduler: Scheduler, limit: int = 2000) -> None:
    for _ in range(limit):
        if not scheduler.has_work:
            return
        scheduler.step()
    raise AssertionError("the scheduler did not finish its requests")


def test_join_mid_decode_and_leave_early_match_eager(served_pair):
    scheduler = make_scheduler(served_pair)
    first = greedy_request("a", PROMPTS[0], 24)
    scheduler.add(first)
    for _ in range(6):
        scheduler.step()
    assert first.prefilled and 0 < len(first.seq.output_ids) < 24          # decoding when the others join
    joiners = [greedy_request(name, prompt, n) for name, prompt, n in (("b", PROMPTS[1], 12), ("c", PROMPTS[2], 20))]
    leaver = greedy_request("d", PROMPTS[3], 30)
    for request in joiners + [leaver]:
        scheduler.add(request)
    while len(leaver.seq.output_ids) < 3:
        scheduler.step()
    assert scheduler.abort("d") is leaver and leaver.finish_reason == "abort"
    run_until_done(scheduler)
    for request, n in zip([first, *joiners], (24, 12, 20)):
        assert request.finish_reason == "length"
        assert request.seq.output_ids == eager(served_pair, request.seq.token_ids[:request.seq.prompt_len], n)
    assert scheduler.blocks.used_blocks == 0                                # every block came back
    stats = scheduler.stats
    assert stats.buckets["decoder_batch_4"] > 0 and stats.padded_rows > 0  # 3 sequences ran on the batch-4 graph
    assert first.ttft_s > 0 and all(gap > 0 for gap in first.itl_s)


def test_small_pool_preempts_newest_and_recomputes(served_pair):
    scheduler = make_scheduler(served_pair, num_blocks=8)                   # 128 tokens for 4 requests of ~60
    requests = [greedy_request(i, prompt, 40) for i, prompt in enumerate(PROMPTS)]
    for request in requests:
        scheduler.add(request)
    run_until_done(scheduler)
    assert scheduler.stats.preemptions > 0
    assert any(r.preemptions for r in requests)
    for request in requests:
        assert request.seq.output_ids == eager(served_pair, request.seq.token_ids[:request.seq.prompt_len], 40)
    assert scheduler.blocks.used_blocks == 0


def test_refuses_what_can_never_fit(served_pair):
    scheduler = make_scheduler(served_pair, num_blocks=8)
    with pytest.raises(RequestTooLongError, match=r"= 130 tokens exceeds the compiled max_seq_len=128"):
        scheduler.add(greedy_request("long", list(range(3, 103)), 30))
    assert not scheduler.has_work


def test_prefix_cache_reused_across_requests(served_pair):
    scheduler = make_scheduler(served_pair)
    shared = list(range(10, 50))
    scheduler.add(greedy_request("x", shared + [1, 2], 4))
    run_until_done(scheduler)
    again = greedy_request("y", shared + [7], 4)
    scheduler.add(again)
    run_until_done(scheduler)
    assert again.cached_tokens == 32                                        # two full blocks of 16 reused
    assert scheduler.stats.prefix_hits == 32
    assert again.seq.output_ids == eager(served_pair, shared + [7], 4)
