"""plan-serving's grid options: the decode bucket sets compared, and --price (cost per million output tokens)."""

from __future__ import annotations

import json

import pytest

from optimum_npu.cli import main
from optimum_npu.planner.serving_sim.candidates import bucket_sets
from optimum_npu.planner.serving_sim.plan_serving import plan_serving
from optimum_npu.planner.serving_sim.replay import replay
from optimum_npu.planner.serving_sim.report import COLUMNS, summary_rows
from optimum_npu.planner.serving_sim.search import make_runner
from optimum_npu.planner.workload import load_workload

#: A known workload: 30 requests of 40 prompt tokens, each answered with exactly 8 output tokens.
KNOWN = {"arrivals": {"process": "poisson", "rate": 20000.0}, "num_requests": 30, "seed": 5,
         "prompt_tokens": {"dist": "fixed", "value": 40}, "output_tokens": {"dist": "fixed", "value": 8}}
PRICE = 2.5     # per device-hour


def test_bucket_sets_by_name():
    assert bucket_sets(32) == [(1, 2, 4, 8, 16, 32), (16, 32), (32,)]
    assert bucket_sets(32, ["step8", "top3"]) == [(1, 2, 4, 8, 16, 24, 32), (8, 16, 32)]
    assert bucket_sets(4, ["pow2", "top3", "max"]) == [(1, 2, 4), (4,)]      # top3 of 4 is pow2: compared once
    with pytest.raises(ValueError, match=r"--bucket-sets 'pow2,pow3': unknown set\(s\) \['pow3'\]"):
        bucket_sets(8, ["pow2", "pow3"])


@pytest.fixture(scope="module")
def priced_plan(make_checkpoint):
    checkpoint = make_checkpoint("LlamaForCausalLM")
    workload = load_workload(KNOWN)
    plan = plan_serving(checkpoint, workload, {"ttft_p99": 0.01}, ["atom", "rngd"], ["none"], [4], [128], [1],
                        prices={"atom": PRICE}, bucket_sets=["pow2", "top2", "max"])
    return plan, workload


def test_every_bucket_set_is_replayed_on_its_own_graphs(priced_plan):
    plan, _ = priced_plan
    used = {d.candidate.label(): set(g.saturation.buckets) - {"prefill"} for d, g in plan.scored}
    assert used == {"atom none TP1x1 b4 pow2 L128": {"decoder_batch_1", "decoder_batch_2", "decoder_batch_4"},
                    "atom none TP1x1 b4 [2,4] L128": {"decoder_batch_2", "decoder_batch_4"},
                    "atom none TP1x1 b4 [4] L128": {"decoder_batch_4"},
                    "rngd none TP1x1 b4 pow2 L128": {"decoder_batch_1", "decoder_batch_2", "decoder_batch_4"},
                    "rngd none TP1x1 b4 [2,4] L128": {"decoder_batch_2", "decoder_batch_4"},
                    "rngd none TP1x1 b4 [4] L128": {"decoder_batch_4"}}
    padding = {d.candidate.decode_buckets: g.saturation.padding_waste for d, g in plan.scored
               if d.candidate.npu == "atom"}
    assert padding[(1, 2, 4)] <= padding[(2, 4)] <= padding[(4,)] and padding[(4,)] > 0


def test_price_gives_the_cost_per_million_output_tokens(priced_plan):
    """$/M tok = devices x price per device-hour x hours the workload took / output tokens x 10^6, recomputed
    from a replay of the known workload at the chosen rate."""
    plan, workload = priced_plan
    rows = {row[0]: dict(zip(COLUMNS, row)) for row in summary_rows(plan.outcomes)}
    choice = plan.outcomes["atom"].choice
    rate = choice.goodput.rate
    requests = workload.at_rate(rate)
    replays = [replay(make_runner(choice.deployment), requests[i::choice.replicas]) for i in range(choice.replicas)]
    tokens = sum(r.output_tokens for one in replays for r in one.served)
    hours = max(one.makespan_s for one in replays) / 3600
    assert tokens == 30 * 8
    expected = choice.devices * PRICE * hours / tokens * 1e6
    assert rows["atom"]["$/M tok"] == f"{expected:.3f}" and float(rows["atom"]["$/M tok"]) > 0
    assert choice.cost_per_hour == PRICE * choice.devices
    assert rows["rngd"]["$/M tok"] == "-"                   # no price given for it


def test_cli_price_and_bucket_set_errors(tmp_path, capsys):
    workload = tmp_path / "w.json"
    workload.write_text(json.dumps(KNOWN))
    base = ["plan-serving", "llama-3-8b", "--workload", str(workload), "--slo", "ttft_p99=1", "--npu", "atom,rngd"]
    assert main([*base, "--price", "atom=cheap"]) == 2
    assert "--price term 'atom=cheap'" in capsys.readouterr().err
    assert main([*base, "--price", "h100=2"]) == 2
    assert "NPU one of ['atom', 'rngd']" in capsys.readouterr().err
    assert main([*base, "--bucket-sets", "pow2,all"]) == 2
    assert "unknown set(s) ['all']" in capsys.readouterr().err
