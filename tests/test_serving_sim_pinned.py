"""plan-serving's figures pinned: the search's speed-ups (memoised call costs, shared captures, reused
probes, early-stopped failing probes) must give exactly the figures the plain search gave; and the early stop
(``SLOWatch``) stops exactly the replays whose full metrics miss the SLO.

The figures below were produced by the search before those speed-ups (commit 4e85686) on a tiny Llama;
every probe's rate and verdict, the full metrics of the saturation replay and of every probe meeting the SLO
(a digest), the cheapest choice per preset, its replicas and its latency-rate curve must stay bit-identical
(floats compared through their ``repr``)."""

from __future__ import annotations

import hashlib
import json
import random

import pytest

from optimum_npu.planner.serving_sim.metrics import PERCENTILES, SLO_METRICS, ServingMetrics, SLOWatch
from optimum_npu.planner.serving_sim.plan_serving import plan_serving
from optimum_npu.planner.serving_sim.replay import ReplayResult, ServedRequest
from optimum_npu.planner.workload import load_workload
from optimum_npu.runtime.scheduler_stats import SchedulerStats

WORKLOAD = {"arrivals": {"process": "poisson", "rate": 30000.0}, "num_requests": 30, "seed": 3,
            "prompt_tokens": {"dist": "uniform", "min": 20, "max": 80},
            "output_tokens": {"dist": "uniform", "min": 1, "max": 40}, "shared_prefix": {"groups": 2, "tokens": 130}}
SLO = {"ttft_p99": 0.0003, "itl_p99": 0.001}


def plan_figures(plan) -> dict:
    """Every candidate's goodput and its probes (full metrics), and the cheapest choice per preset."""
    scored = {}
    for deployment, found in plan.scored:
        if found is None:
            scored[deployment.candidate.label()] = None
            continue
        met = [found.saturation.to_dict(), *(p.to_dict() for p in found.probes if p.meets(plan.slo))]
        digest = hashlib.sha256(json.dumps([[p.rate for p in found.probes], met], sort_keys=True).encode())
        scored[deployment.candidate.label()] = [repr(found.rate), "".join("+" if p.meets(plan.slo) else "-"
                                                                          for p in found.probes),
                                                digest.hexdigest()[:16]]
    chosen = {name: None if o.choice is None else [o.choice.deployment.candidate.label(), o.choice.replicas,
                                                    repr(o.choice.at_rate.latency["ttft_p99"]),
                                                    repr(o.choice.goodput.rate),
                                                    [repr(m.latency["itl_p99"]) for m in o.curve]]
              for name, o in plan.outcomes.items()}
    return {"scored": scored, "chosen": chosen}


@pytest.fixture(scope="module")
def tiny_plan(make_checkpoint):
    checkpoint = make_checkpoint("LlamaForCausalLM")
    return plan_serving(checkpoint, load_workload(WORKLOAD), SLO, ["atom", "rngd"], ["none", "fp8"], [4], [256],
                        [1, 2], bucket_sets=["pow2", "max"])    # the two sets compared when the figures were pinned


@pytest.mark.parametrize("seed", range(3))
def test_slo_watch_stops_exactly_the_replays_that_miss(seed):
    """Fed every served request, ``SLOWatch`` says "missed" (at some point) iff the full metrics miss the SLO."""
    rng = random.Random(seed)
    for _ in range(40):
        count = rng.randint(1, 150)
        served = []
        for index in range(count):
            tokens = rng.randint(1, 6)
            first = rng.expovariate(10)
            gaps = tuple(rng.expovariate(50) for _ in range(tokens - 1))
            served.append(ServedRequest(index, 0.0, first, first + sum(gaps), tokens, gaps, 0))
        slo = {f"{rng.choice(SLO_METRICS)}_{rng.choice(list(PERCENTILES))}": rng.choice([0.01, 0.05, 0.2, 0.5])}
        watch = SLOWatch(slo, [r.output_tokens for r in served])
        stopped_at = next((i for i, r in enumerate(served) if watch.missed_by(r)), None)
        replayed = ReplayResult(served, [], SchedulerStats(), 1.0, 0.0, 0.0)
        misses = not ServingMetrics.of([replayed], 1.0).meets(slo)
        assert (stopped_at is not None) == misses, (slo, watch.missed)


def test_search_figures_are_pinned(tiny_plan):
    figures = plan_figures(tiny_plan)
    assert figures == PINNED


#: Produced by the search at commit 4e85686 (before the speed-ups): per candidate [goodput, probe verdicts, digest].
PINNED = {"scored": {
    "atom none TP1x1 b4 pow2 L256": ["20205.86358515964", "++++++++", "a694bedf5f2c339d"],
    "atom none TP1x1 b4 pow2 L256 pc": ["25944.71812615985", "++++++++", "2bf330ba280d343a"],
    "atom none TP1x1 b4 [4] L256": ["20102.91043768965", "++++++++", "769877aa3be708fe"],
    "atom none TP1x1 b4 [4] L256 pc": ["25822.201996407228", "++++++++", "2364b16b06362394"],
    "atom none TP2x1 b4 pow2 L256": ["3477.3851310481296", "++--+-++", "be3c9a7de029bee6"],
    "atom none TP2x1 b4 pow2 L256 pc": ["6113.9677188258665", "+++-++-+", "ec6469be18e1774f"],
    "atom none TP2x1 b4 [4] L256": ["3471.7481338063635", "++--+-++", "b94e84098ca8def6"],
    "atom none TP2x1 b4 [4] L256 pc": ["6050.522865734992", "+++-++--", "13b636ded77f0154"],
    "rngd none TP1x1 b4 pow2 L256": ["113711.90584958499", "++++++++", "768a6590f8dfd3d7"],
    "rngd none TP1x1 b4 pow2 L256 pc": ["145274.3137107769", "++++++++", "11b684fd8c1899a0"],
    "rngd none TP1x1 b4 [4] L256": ["112705.9144785112", "++++++++", "cb35271ce338fb69"],
    "rngd none TP1x1 b4 [4] L256 pc": ["144088.79499075917", "++++++++", "2ac375d7a36fd668"],
    "rngd none TP2x1 b4 pow2 L256": ["5347.718291490113", "+++---++", "e6c5c51dc432507a"],
    "rngd none TP2x1 b4 pow2 L256 pc": ["7248.139254111717", "++++----", "252b9cc5be3850c0"],
    "rngd none TP2x1 b4 [4] L256": ["5132.528911703659", "++-+++++", "191a682bf2ad06bf"],
    "rngd none TP2x1 b4 [4] L256 pc": ["7242.420212845881", "++++----", "09605dbbd3848fe3"],
    "atom fp8 TP1x1 b4 pow2 L256": None,
    "atom fp8 TP1x1 b4 pow2 L256 pc": None,
    "atom fp8 TP1x1 b4 [4] L256": None,
    "atom fp8 TP1x1 b4 [4] L256 pc": None,
    "atom fp8 TP2x1 b4 pow2 L256": None,
    "atom fp8 TP2x1 b4 pow2 L256 pc": None,
    "atom fp8 TP2x1 b4 [4] L256": None,
    "atom fp8 TP2x1 b4 [4] L256 pc": None,
    "rngd fp8 TP1x1 b4 pow2 L256": ["137517.69542160362", "++++++++", "26fb4e485682f18b"],
    "rngd fp8 TP1x1 b4 pow2 L256 pc": ["179283.87711617362", "++++++++", "d4a1677326f26432"],
    "rngd fp8 TP1x1 b4 [4] L256": ["136049.12108037702", "++++++++", "16fb822a536f3d5b"],
    "rngd fp8 TP1x1 b4 [4] L256 pc": ["177481.7545571964", "++++++++", "c5df05ddeb8bf587"],
    "rngd fp8 TP2x1 b4 pow2 L256": ["5375.497626621551", "+++---++", "83e5b6d95941aa65"],
    "rngd fp8 TP2x1 b4 pow2 L256 pc": ["7414.110411638935", "++++--+-", "91b821f9096e4357"],
    "rngd fp8 TP2x1 b4 [4] L256": ["5370.580740891991", "+++---++", "8c9c1c249d55f409"],
    "rngd fp8 TP2x1 b4 [4] L256 pc": ["7281.171629942193", "++++----", "93990bc449e9532a"],
}, "chosen": {"atom": ["atom none TP1x2 b4 pow2 L256 pc", 2, "2.7291420993694204e-05", "47940.732788939706",
              ["1.4244260299824943e-05", "1.508947581405564e-05", "1.6045176968744576e-05",
               "1.6045176968744576e-05", "1.6045176968744576e-05", "1.604517696874455e-05",
               "1.977651256977419e-05"]],
     "rngd": ["rngd fp8 TP1x1 b4 pow2 L256 pc", 1, "5.284580848803787e-06", "179283.87711617362",
              ["2.0994009589080922e-06", "2.4433837007449815e-06", "2.885237604766893e-06",
               "2.4503093046097485e-06", "2.5353186310459207e-06", "3.0710270655084427e-06",
               "2.8837535467958773e-06"]]}}
