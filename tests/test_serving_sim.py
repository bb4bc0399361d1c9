"""plan-serving: the serving scheduler on cost-only runners (equal to real execution), workloads, fit pruning,
goodput monotonicity and determinism, and the CLI's errors for bad input."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest

from optimum_npu.cli import main
from optimum_npu.device.spec import PRESETS
from optimum_npu.planner.extrapolate import extrapolated_plans
from optimum_npu.planner.models import load_hf_config
from optimum_npu.planner.serving_sim import search
from optimum_npu.planner.serving_sim.candidates import build_deployments
from optimum_npu.planner.serving_sim.cost_runner import CostOnlyRunner, timings_from_engine, timings_from_plan
from optimum_npu.planner.serving_sim.metrics import ServingMetrics, parse_slo
from optimum_npu.planner.serving_sim.replay import replay
from optimum_npu.planner.workload import WorkloadError, load_workload
from optimum_npu.models.registry import lookup_architecture
from optimum_npu.runtime import BlockManager, StepRunner
from serving_fixtures import SERVING_NPU

FLASH = {**SERVING_NPU, "attn_impl": "flash_attn", "kvcache_partition_len": 32}
WORKLOAD = {"arrivals": {"process": "poisson", "rate": 3e4}, "num_requests": 12, "seed": 1,
            "prompt_tokens": {"dist": "uniform", "min": 3, "max": 60},
            "output_tokens": {"dist": "uniform", "min": 1, "max": 40}, "shared_prefix": {"groups": 2, "tokens": 20}}


def small_ids():
    """Prompt ids inside the tiny vocabulary: the shared prefix of a group, then the request's own ids."""
    bases: dict[str, int] = {}

    def ids(index, item):
        shared = []
        if item.prefix_id is not None:
            base = bases.setdefault(item.prefix_id, 10 + 30 * len(bases))
            shared = list(range(base, base + item.prefix_tokens))
        rng = random.Random(index)
        return shared + [rng.randrange(80, 250) for _ in range(item.prompt_tokens - len(shared))]

    return ids


@pytest.fixture(scope="module")
def flash_pair(make_compiled):
    return make_compiled("LlamaForCausalLM", npu_overrides=FLASH)


def _runs(pair, timings):
    runtime, config = pair.model._runtime, pair.model._runtime.config
    requests = load_workload(WORKLOAD).at_rate(3e4)

    def pool():   # 9 blocks of 16 for up to 8 requests of up to 100 tokens: preemption and prefix reuse happen
        return BlockManager(9, config.kvcache_block_size, True, max_sequences=config.batch_size)

    real = StepRunner(runtime.engine, pool(), config.max_seq_len, config.blocks_per_sequence, runtime.new_stats)
    executed = replay(real, requests, choose=None, token_ids=small_ids())
    cost_only = replay(CostOnlyRunner(timings, pool(), config.max_seq_len, config.prefill_chunk_size,
                                      list(config.decoder_batch_sizes), config.partition_len), requests,
                       token_ids=small_ids())
    return executed, cost_only


def test_cost_only_replay_equals_executed_replay(flash_pair):
    executed, cost_only = _runs(flash_pair, timings_from_engine(flash_pair.model._runtime.engine))
    assert executed.stats.preemptions > 0 and executed.stats.prefix_hits > 0 and executed.stats.padded_rows > 0
    assert len(executed.stats.buckets) >= 3                       # several decode buckets were used
    assert cost_only.stats.to_dict() == executed.stats.to_dict()  # same decisions: buckets, preemptions, hits
    assert cost_only.served == executed.served                    # same simulated times, token by token


@pytest.mark.slow
def test_cost_only_on_weightless_captures_matches_executed(flash_pair):
    """The planner's extrapolated meta captures of the same model give the same schedule and latencies."""
    runtime = flash_pair.model._runtime
    hf_config = load_hf_config(flash_pair.checkpoint)
    config = runtime.config
    costs, _ = extrapolated_plans(hf_config, lookup_architecture(hf_config, "decoder"), config,
                                  list(runtime.engine.graphs), [1], runtime.engine.spec)[1]
    executed, cost_only = _runs(flash_pair, timings_from_plan(costs, runtime.engine.spec))
    assert {k: v for k, v in cost_only.stats.to_dict().items() if k != "busy_s"} == \
        {k: v for k, v in executed.stats.to_dict().items() if k != "busy_s"}
    for ours, theirs in zip(cost_only.served, executed.served):
        assert ours.index == theirs.index and ours.output_tokens == theirs.output_tokens
        assert ours.ttft_s == pytest.approx(theirs.ttft_s, rel=1e-9)
        assert ours.e2e_s == pytest.approx(theirs.e2e_s, rel=1e-9)


# ---- search --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_grid(make_checkpoint, tmp_path_factory):
    """Deployments of the tiny Llama on a custom NPU whose memory holds its weights only at TP=2."""
    checkpoint = make_checkpoint("LlamaForCausalLM")
    workload = load_workload({**WORKLOAD, "num_requests": 40, "shared_prefix": None})
    probe = build_deployments(checkpoint, ["atom"], ["none"], [4], [128], [1, 2], [False], workload.max_total_tokens)
    need = {d.candidate.tensor_parallel_size: sum(v for k, v in d.memory.items() if k != "kv_cache")
            for d in probe}
    per_block = probe[0].memory["kv_cache"] // probe[0].kv_blocks
    kv_needed = 4 * per_block              # batch 4, one 128-token block per request
    spec = dataclasses.replace(PRESETS["atom"], name="small", dram_bytes=need[1] + kv_needed - 1)
    spec_file = tmp_path_factory.mktemp("spec") / "small.json"
    spec_file.write_text(json.dumps(spec.to_dict()))
    assert need[2] + kv_needed <= spec.dram_bytes < need[1] + kv_needed
    grid = build_deployments(checkpoint, [str(spec_file)], ["none"], [4], [128], [1, 2], [False],
                             workload.max_total_tokens)
    return grid, workload


def test_a_deployment_that_does_not_fit_is_never_simulated(tiny_grid, monkeypatch):
    grid, workload = tiny_grid
    simulated = []
    real_make_runner = search.make_runner
    monkeypatch.setattr(search, "make_runner", lambda d: simulated.append(d.candidate) or real_make_runner(d))
    from optimum_npu.planner.serving_sim.plan_serving import score

    scored = score(grid, workload, {"ttft_p99": 1.0})
    unfit = [d for d, _ in scored if not d.fits]
    assert unfit and all(d.candidate.tensor_parallel_size == 1 for d in unfit) and "KV blocks" in unfit[0].reason
    assert all(g is None for d, g in scored if not d.fits)
    assert simulated and not {d.candidate for d in unfit} & set(simulated)


def test_goodput_is_monotone_in_devices_and_slo(tiny_grid):
    grid, workload = tiny_grid
    deployment = next(d for d in grid if d.fits)
    saturated = search.simulate(deployment, workload, search.SATURATION_RATE)
    slo = {"ttft_p99": saturated.latency["ttft_p99"] / 4}        # met at light load, missed at saturation
    one, two = search.goodput(deployment, workload, slo, 1), search.goodput(deployment, workload, slo, 2)
    assert 0 < one.rate <= two.rate
    stricter = search.goodput(deployment, workload, {"ttft_p99": slo["ttft_p99"] / 2}, 1)
    assert stricter.rate <= one.rate
    both = search.goodput(deployment, workload, {**slo, "itl_p99": one.at_goodput.latency["itl_p99"] / 2}, 1)
    assert both.rate <= one.rate


def test_same_seed_same_report(tiny_grid):
    grid, _ = tiny_grid
    deployment = next(d for d in grid if d.fits)
    first = [search.simulate(deployment, load_workload(WORKLOAD | {"num_requests": 30}), 2e4).to_dict()
             for _ in range(2)]
    assert first[0] == first[1]
    other = search.simulate(deployment, load_workload(WORKLOAD | {"num_requests": 30, "seed": 2}), 2e4).to_dict()
    assert other != first[0]


# ---- input errors --------------------------------------------------------------------------------
@pytest.mark.parametrize("workload, field", [
    ({**WORKLOAD, "arrivals": {"process": "poisson", "rate": -1}}, "'rate'"),
    ({**WORKLOAD, "prompt_tokens": {"dist": "lognormal", "median": 100}}, "'sigma'"),
    ({**WORKLOAD, "output_tokens": {"dist": "histogram", "edges": [1, 8], "counts": [1, 2]}}, "'edges'/'counts'"),
    ({**WORKLOAD, "prompt_tokens": {"dist": "uniform", "min": 9, "max": 3}}, "'max'"),
    ({**WORKLOAD, "arrival": {}}, "unknown fields ['arrival']"),
])
def test_bad_workloads_name_the_field(workload, field):
    with pytest.raises(WorkloadError, match=field.replace("[", r"\[").replace("]", r"\]")):
        load_workload(workload)


def test_trace_workload_and_its_errors(tmp_path):
    lines = [{"arrival_s": 0.5 * i, "prompt_tokens": 30 + i, "output_tokens": 4, "prefix_id": "sys",
              "prefix_tokens": 20} for i in range(5)]
    (tmp_path / "t.jsonl").write_text("\n".join(map(json.dumps, lines)))
    (tmp_path / "w.json").write_text(json.dumps({"trace": "t.jsonl"}))
    workload = load_workload(tmp_path / "w.json")
    assert workload.rate == pytest.approx(2.0) and workload.has_shared_prefixes
    assert [r.arrival_s for r in workload.at_rate(4.0)] == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])
    (tmp_path / "t.jsonl").write_text(json.dumps({"arrival_s": 0, "prompt_tokens": 0, "output_tokens": 4}) + "\n")
    with pytest.raises(WorkloadError, match="line 1: field 'prompt_tokens' = 0"):
        load_workload(tmp_path / "w.json")


@pytest.mark.parametrize("slo, message", [
    ("ttft_p99=fast", "ttft_p99: value 'fast'"), ("latency_p99=1", "latency_p99=1"), ("ttft_p99=-1", "ttft_p99"),
    ("", "--slo is empty")])
def test_cli_errors_name_the_field(slo, message, tmp_path, capsys):
    workload = tmp_path / "w.json"
    workload.write_text(json.dumps(WORKLOAD))
    assert main(["plan-serving", "llama-3-8b", "--workload", str(workload), "--slo", slo]) == 2
    assert message in capsys.readouterr().err
    workload.write_text("{not json")
    assert main(["plan-serving", "llama-3-8b", "--workload", str(workload), "--slo", "ttft_p99=1"]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_slo_parsing():
    assert parse_slo("ttft_p99=0.5, itl_p99=0.05") == {"ttft_p99": 0.5, "itl_p99": 0.05}
    metrics = ServingMetrics(1.0, 10, 0, {"ttft_p99": 0.4, "itl_p99": 0.06}, 1, 1, 0, {}, 0, 0, 0, 0)
    assert not metrics.meets({"ttft_p99": 0.5, "itl_p99": 0.05}) and metrics.meets({"ttft_p99": 0.5})
