"""Simulated figures are pinned: the host-speed work (cost cache, executor fast path, kernels) must not
move a single bit of npu_stats or of the profiler's events.

The expected values in ``tests/data/sim_figures.json`` were written by the code before the cost cache
existed; regenerate them only on a deliberate cost-model change, and say so in the commit:

    PYTHONPATH=. python tests/test_sim_figures.py --write
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch

from optimum_npu import NPUModelForCausalLM
from optimum_npu.device.cost import GraphCostModel
from optimum_npu.device.spec import PRESETS
from optimum_npu.models.decoder.estimate import meta_cost_models
from optimum_npu.models.tiny import build_causal_lm

EXPECTED = Path(__file__).parent / "data" / "sim_figures.json"
BASE = {"max_seq_len": 128, "batch_size": 2, "decoder_batch_sizes": [1, 2], "prefill_chunk_size": 16,
        "npu": "atom", "profile": True}
#: run name -> (extra knobs, prompt lengths of the batch, new tokens[, tiny-model size])
RUNS = {
    "flash_batch2": ({"kvcache_block_size": 32, "attn_impl": "flash_attn", "kvcache_partition_len": 32, "device": 6},
                     [37, 20], 6),
    "eager_tp2": ({"tensor_parallel_size": 2, "device": [2, 3]}, [23], 5),
    # host speed (issue 19): the demo model, 3 rows on the batch-4 bucket (weight-stationary linears, padding rows)
    "demo_batch3": ({"batch_size": 4, "decoder_batch_sizes": [1, 2, 4], "device": 5}, [40, 9, 25], 5, "demo"),
}
#: Runs left to the whole suite (a larger model to compile).
SLOW_RUNS = ("demo_batch3",)


def run_figures(name: str) -> dict:
    """npu_stats, step records and the profiler's events (clock-independent parts) of one fixed run."""
    knobs, lengths, new_tokens, *size = RUNS[name]
    model = NPUModelForCausalLM.from_model(build_causal_lm("LlamaForCausalLM", *size), npu_config=BASE | knobs,
                                           compile_cache=False)
    try:
        width = max(lengths)
        ids = torch.randint(3, 200, (len(lengths), width), generator=torch.Generator().manual_seed(7))
        mask = torch.tensor([[0] * (width - n) + [1] * n for n in lengths])
        model.generate(input_ids=ids * mask, attention_mask=mask, max_new_tokens=new_tokens,
                       min_new_tokens=new_tokens, do_sample=False)
        stats = model.npu_stats
        profile = model.npu_profile
        events = [[e.device.split(" ")[0], e.name, e.category, e.duration_s, e.args] for e in profile.events]
        calls = [[c.device.split(" ")[0], c.name, c.duration_s, c.args] for c in profile.calls]
        return {
            "stats": stats.to_dict(),
            "steps": [[s.phase, s.graph, s.active, s.tokens, s.seconds, s.attention_seconds, s.host_seconds]
                      for s in stats.steps],
            "category_seconds": profile.totals(),
            "events": len(events),
            "events_sha256": _digest(events),   # every event's name, lane, duration and args, bit for bit
            "calls_sha256": _digest(calls),
        }
    finally:
        model.release()


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_RUNS else n
                                  for n in sorted(RUNS)])
def test_simulated_figures_are_bit_identical_to_the_pinned_ones(name):
    expected = json.loads(EXPECTED.read_text())[name]
    actual = json.loads(json.dumps(run_figures(name)))  # the same JSON round trip as the stored values
    assert actual["stats"] == expected["stats"]
    assert actual["steps"] == expected["steps"]
    assert actual["category_seconds"] == expected["category_seconds"]
    assert actual["events"] == expected["events"]
    assert actual["events_sha256"] == expected["events_sha256"]
    assert actual["calls_sha256"] == expected["calls_sha256"]


@pytest.mark.parametrize("architecture, knobs", [
    ("LlamaForCausalLM", {"attn_impl": "flash_attn", "kvcache_partition_len": 32}),
    ("LlamaForCausalLM", {"attn_impl": "eager"}),
    ("Gemma3ForCausalLM", {}),   # a sliding-window layer and a global one
])
def test_a_cached_call_costs_exactly_what_an_uncached_one_does(architecture, knobs):
    knobs = {"max_seq_len": 128, "batch_size": 2, "decoder_batch_sizes": [2], "prefill_chunk_size": 16,
             "dtype": "float16"} | knobs
    _, costs = meta_cost_models(build_causal_lm(architecture).config, knobs, ["decoder_batch_2"])
    cached = costs["decoder_batch_2"]
    uncached = GraphCostModel(cached.index.graph, PRESETS["atom"], "float16", cache_calls=False)
    contexts = [[[5], [-1]], [[40], [7]], [[7], [40]], [[63], [64]], [[40], [7]], [[5], [-1]]]
    first = {}
    for rows in contexts:
        positions = torch.tensor(rows)
        call = cached.call(positions, 96, 2048)
        assert call.timeline == tuple(uncached.timeline(positions, 96, 2048))
        assert [e.args for e in call.timeline] == [e.args for e in uncached.timeline(positions, 96, 2048)]
        assert (call.seconds, call.attention_seconds) == uncached.call_seconds(positions)
        assert call == uncached.call(positions, 96, 2048)
        key = cached.call_extent(positions)
        assert first.setdefault(key, call) is call   # the same extent is computed once
    if knobs.get("attn_impl") == "flash_attn":     # rows swapped or rounded to the same partitions: one extent
        assert cached.call_extent(torch.tensor([[40], [7]])) == cached.call_extent(torch.tensor([[7], [33]]))
        assert cached.call(torch.tensor([[40], [7]])).seconds < cached.call(torch.tensor([[63], [64]])).seconds


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    EXPECTED.parent.mkdir(exist_ok=True)
    EXPECTED.write_text(json.dumps({name: run_figures(name) for name in sorted(RUNS)}, indent=1) + "\n")
    print(f"wrote {EXPECTED}")
