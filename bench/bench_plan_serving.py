"""plan-serving speed: host seconds of a cost-only replay of an 8B model (llama-3-8b shapes, no weights) and of
one goodput search, beside the simulated time they cover.

    python bench/bench_plan_serving.py [--requests 10000] [--npu a100-80gb] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import time

import torch

from optimum_npu.planner.serving_sim.candidates import build_deployments
from optimum_npu.planner.serving_sim.search import goodput, simulate
from optimum_npu.planner.workload import load_workload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--npu", default="a100-80gb")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workload", default="examples/workloads/chat_poisson.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    workload = load_workload(args.workload, args.requests)
    start = time.perf_counter()
    deployment = next(d for d in build_deployments("llama-3-8b", [args.npu], ["none"], [args.batch_size], [2048], [1],
                                                   [False], workload.max_total_tokens) if d.fits)
    captured = time.perf_counter()
    metrics = simulate(deployment, workload, workload.rate)
    replayed = time.perf_counter()
    search = goodput(deployment, workload.head(300), {"ttft_p99": 0.5, "itl_p99": 0.05})
    searched = time.perf_counter()
    print(f"{deployment.candidate.label()}: weightless capture {captured - start:.1f} s")
    print(f"replay of {args.requests} requests at {workload.rate:g} req/s: {replayed - captured:.1f} s on the host for "
          f"{args.requests / metrics.requests_per_s:.0f} s simulated ({metrics.tokens_per_s:.0f} tok/s, "
          f"TTFT p99 {metrics.latency['ttft_p99'] * 1e3:.0f} ms, ITL p99 {metrics.latency['itl_p99'] * 1e3:.1f} ms)")
    print(f"goodput search (300 requests, {len(search.probes) + 1} replays): {searched - replayed:.1f} s -> "
          f"{search.rate:.2f} req/s")


if __name__ == "__main__":
    main()
