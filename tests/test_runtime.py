"""The HF-free runtime driven directly: sequences, block manager, step runner and sampler over a loaded engine.

No HF model class is used: the runner runs the compiled graphs of a tiny Llama artifact (its device
engine), and a few lines here play the scheduler. Tokens are compared with eager Transformers greedy
decoding, one request at a time.
"""

from __future__ import annotations

import pytest
import torch

from optimum_npu.runtime import (BlockManager, KVCacheFullError, NPUStats, Sampler, SamplingParams, Sequence,
                                 SequenceStatus, StepRunner)


#: Paged KV cache in blocks of 16 tokens with flash partitions: a sequence spans several blocks.
PAGED = {"kvcache_block_size": 16, "attn_impl": "flash_attn", "kvcache_partition_len": 32}


@pytest.fixture(scope="module")
def llama(make_compiled):
    return make_compiled("LlamaForCausalLM", PAGED)


def eager_greedy(ref, prompt: list[int], new_tokens: int) -> list[int]:
    """Greedy tokens of the eager Transformers model (full forward each step)."""
    ids = torch.tensor([prompt])
    out = []
    with torch.no_grad():
        for _ in range(new_tokens):
            token = int(ref(ids).logits[0, -1].argmax())
            out.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return out


def make_runner(pair, num_blocks: int | None = None) -> StepRunner:
    """A fresh block manager and step runner over the loaded artifact's device engine."""
    config, engine = pair.model.npu_config, pair.model._runtime.engine
    blocks = BlockManager(num_blocks or config.kvcache_num_blocks, config.kvcache_block_size, False,
                          max_sequences=config.batch_size)
    return StepRunner(engine, blocks, config.max_seq_len, config.blocks_per_sequence,
                      lambda: NPUStats(device="test", spec="atom"))


def prompt(length: int, seed: int) -> list[int]:
    return torch.randint(3, 250, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_requests_join_mid_decode_and_leave_early(llama):
    runner, sampler = make_runner(llama), Sampler()
    new_tokens = {"a": 8, "b": 3, "c": 6}
    seqs = {rid: Sequence(rid, prompt(n, seed), SamplingParams(max_new_tokens=new_tokens[rid]))
            for seed, (rid, n) in enumerate((("a", 20), ("b", 37), ("c", 25)))}
    running, prefilling, joined_at = [], [], None
    for rid in ("a", "b"):
        runner.admit(seqs[rid])
        prefilling.append(seqs[rid])
    step = 0
    while running or prefilling:
        if step == 2:                                   # "c" arrives while "a" is decoding
            runner.admit(seqs["c"])
            prefilling.append(seqs["c"])
            joined_at = [len(seqs["a"].output_ids), len(seqs["b"].output_ids)]
        decoding = [seq for seq in running]
        ready = runner.step(prefill=prefilling, decode=decoding)
        prefilling = [seq for seq in prefilling if seq.request_id not in ready]
        for rid, logits in ready.items():
            seq = seqs[rid]
            [token] = sampler.sample(logits[None], [seq.sampling], [rid])
            if seq.append(token):
                runner.finish(seq)                      # "b" leaves after 3 tokens, the others keep decoding
                running = [s for s in running if s is not seq]
            elif seq not in running:
                running.append(seq)
        step += 1
    assert joined_at[0] > 0                             # "a" was mid-decode when "c" joined
    for rid, seq in seqs.items():
        assert seq.status == SequenceStatus.FINISHED
        assert seq.output_ids == eager_greedy(llama.ref, seq.token_ids[:seq.prompt_len], new_tokens[rid]), rid
    buckets = runner.stats.buckets
    assert min(buckets["decoder_batch_1"], buckets["decoder_batch_2"], buckets["decoder_batch_4"]) > 0   # 1, 2, 3 rows
    assert runner.stats.prefix_hit_tokens == 0 and runner.blocks.used_blocks == 0   # every block returned


def test_decode_step_reserves_every_block_before_running(llama):
    runner = make_runner(llama, num_blocks=5)          # blocks of 16 tokens
    a, b = Sequence("a", prompt(32, 1)), Sequence("b", prompt(40, 2))
    for seq in (a, b):
        runner.admit(seq)
        while runner.prefill(seq) is None:
            pass
    a.append(7), b.append(8)                            # a needs a third block at position 32, b has room
    calls = len(runner.stats.steps)
    with pytest.raises(KVCacheFullError, match="all 5 blocks of 16 tokens are in use"):
        runner.decode([a, b])
    assert len(runner.stats.steps) == calls             # no graph ran
    assert [len(runner.blocks.tables[r]) for r in "ab"] == [2, 3] and (a.num_computed, b.num_computed) == (32, 40)
    runner.blocks.preempt(b)                            # make room: b gives its blocks back and will recompute
    assert b.status == SequenceStatus.PREEMPTED and runner.blocks.can_append([a])
    assert runner.decode([a]).shape[0] == 1 and a.num_computed == 33
    runner.finish(a)


def test_sampler_greedy_top_k_top_p_and_seeds():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.9], [5.0, 0.0, 0.0, 0.0]])
    sampler = Sampler()
    greedy = [SamplingParams(), SamplingParams()]
    assert sampler.sample(logits, greedy) == [1, 0]
    assert sampler.sample(logits, [SamplingParams(temperature=1.0, top_k=1)] * 2) == [1, 0]
    assert sampler.sample(logits, [SamplingParams(temperature=1.0, top_p=0.01)] * 2) == [1, 0]
    hot = SamplingParams(temperature=5.0, seed=3)
    draws = [Sampler().sample(logits[:1].repeat(40, 1), [hot] * 40, ["r"] * 40) for _ in range(2)]
    assert draws[0] == draws[1] and len(set(draws[0])) > 1                  # seeded: reproducible, not greedy
    top2 = Sampler().sample(logits[:1].repeat(200, 1), [SamplingParams(temperature=5.0, top_k=2, seed=0)] * 200,
                            ["s"] * 200)
    assert set(top2) == {1, 3}                                              # only the two best tokens
