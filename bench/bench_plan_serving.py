"""plan-serving speed, before vs after, side by side in one run: a cost-only replay of many requests of an 8B
model (llama-3-8b shapes, no weights) and a goodput search over a grid of candidates, each run by the code of a
git revision (``--before``, default the commit before the speed-ups) and by this tree, alternately, in fresh
processes. Prints host seconds (wall and CPU) of each, their ratios, and whether the figures are identical.

    python bench/bench_plan_serving.py [--requests 10000] [--repeats 2] [--before 4e85686]
    python bench/bench_plan_serving.py --only search      # the 48-candidate search alone

A revision's tree is ``git archive`` of its ``optimum_npu`` into a temporary folder (nothing else is touched).
Ratios are what to read: the host is shared, so absolute seconds move with its load.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKLOAD = ROOT / "examples" / "workloads" / "chat_poisson.json"
#: The search of docs/capacity_planning.md's worked example: 3 presets x 2 quantizations x TP 1/2/4/8 x 2 bucket
#: sets at batch 32 = 48 candidates, 100 requests per probe.
SEARCH = dict(npus=["atom", "rngd", "a100-80gb"], quantizations=["none", "int8"], batch_sizes=[32],
              tensor_parallel_sizes=[1, 2, 4, 8], slo={"ttft_p99": 2.0, "itl_p99": 0.1}, requests=100)


def digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=repr).encode()).hexdigest()[:16]


def worker_replay(requests: int) -> dict:
    """One replay of ``requests`` requests at the workload's rate on one a100-80gb deployment (batch 64)."""
    from optimum_npu.planner.serving_sim.candidates import build_deployments
    from optimum_npu.planner.serving_sim.search import simulate
    from optimum_npu.planner.workload import load_workload

    workload = load_workload(WORKLOAD, requests)
    deployment = next(d for d in build_deployments("llama-3-8b", ["a100-80gb"], ["none"], [64], [2048], [1], [False],
                                                   workload.max_total_tokens) if d.fits)
    wall, cpu = time.perf_counter(), time.process_time()
    metrics = simulate(deployment, workload, workload.rate)
    return {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
            "simulated_s": requests / metrics.requests_per_s, "figures": digest(metrics.to_dict()),
            "label": deployment.candidate.label()}


def worker_search() -> dict:
    """The worked example's search (``SEARCH``), capture included, as ``optimum-npu plan-serving`` runs it."""
    from optimum_npu.planner.serving_sim import plan_serving as module
    from optimum_npu.planner.workload import load_workload

    grid = dict(SEARCH)
    slo, requests = grid.pop("slo"), grid.pop("requests")
    if "bucket_sets" in inspect.signature(module.plan_serving).parameters:
        grid["bucket_sets"] = ["pow2", "max"]        # the two sets the code before compared
    workload = load_workload(WORKLOAD, requests)
    wall, cpu = time.perf_counter(), time.process_time()
    plan = module.plan_serving("llama-3-8b", workload, slo, max_seq_lens=[2048], **grid)
    scored = [(d.candidate.label(), None if g is None else [g.rate, g.saturation.to_dict(),
                                                             [p.meets(slo) for p in g.probes]]) for d, g in plan.scored]
    chosen = {n: None if o.choice is None else [o.choice.deployment.candidate.label(), o.choice.at_rate.to_dict(),
                                                [m.to_dict() for m in o.curve]] for n, o in plan.outcomes.items()}
    return {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
            "candidates": len(plan.scored), "figures": digest([scored, chosen])}


def tree_of(revision: str, into: Path) -> Path:
    """The ``optimum_npu`` package of ``revision``, extracted under ``into`` (a fresh temporary folder)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "optimum_npu"], check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def run_worker(tree: Path, task: str, requests: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, __file__, "--worker", task, "--requests", str(requests)], env=env,
                         check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10000, help="requests of the replay (default 10000)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side, alternating (default 2)")
    parser.add_argument("--before", default="4e85686", help="git revision timed as 'before' (default 4e85686)")
    parser.add_argument("--after", help="git revision timed as 'after' (default: this working tree)")
    parser.add_argument("--only", choices=["replay", "search"], help="time one task only")
    parser.add_argument("--worker", choices=["replay", "search"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import torch

        torch.set_num_threads(1)
        print(json.dumps(worker_replay(args.requests) if args.worker == "replay" else worker_search()))
        return
    tasks = [args.only] if args.only else ["replay", "search"]
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"before": tree_of(args.before, Path(tmp) / "before"),
                 "after": tree_of(args.after, Path(tmp) / "after") if args.after else ROOT}
        for task in tasks:
            runs: dict[str, list[dict]] = {"before": [], "after": []}
            for repeat in range(args.repeats):
                for side in (["before", "after"] if repeat % 2 == 0 else ["after", "before"]):
                    runs[side].append(run_worker(trees[side], task, args.requests))
            report(task, args, runs)


def report(task: str, args, runs: dict[str, list[dict]]) -> None:
    def median(side: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[side])

    same = len({r["figures"] for side in runs.values() for r in side}) == 1
    what = (f"replay of {args.requests} requests ({runs['after'][0]['label']}, "
            f"{runs['after'][0]['simulated_s']:.0f} s simulated)" if task == "replay" else
            f"search of {runs['after'][0]['candidates']} candidates ({SEARCH['requests']} requests per probe, capture "
            "included)")
    print(f"{what}, median of {args.repeats} alternating runs each, before = {args.before}, "
          f"after = {args.after or 'this tree'}:")
    for key in ("wall_s", "cpu_s"):
        before, after = median("before", key), median("after", key)
        print(f"  {key[:-2]:>4}: before {before:7.1f} s   after {after:7.1f} s   speed-up {before / after:5.2f}x   "
              f"(runs: {' '.join(f'{r[key]:.1f}' for r in runs['before'])} | "
              f"{' '.join(f'{r[key]:.1f}' for r in runs['after'])})")
    print(f"  figures identical: {same}")


if __name__ == "__main__":
    main()
