"""The ``optimum-npu plan-serving`` subcommand (registered through ``add_plan_serving_command``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _int_list(text: str) -> list[int]:
    from optimum_npu.planner.commands import _int_list as parse

    return parse(text)


def parse_prices(text: str | None, npus: list[str]) -> dict[str, float]:
    """``"atom=1.2,rngd=2.5"`` -> prices per device-hour; every name must be one of ``npus``."""
    prices: dict[str, float] = {}
    for term in _list(text or ""):
        name, sep, value = term.partition("=")
        try:
            price = float(value) if sep else float("nan")
        except ValueError:
            price = float("nan")
        if name.strip() not in npus or not price >= 0 or price == float("inf"):
            raise ValueError(f"--price term {term!r}: expected NPU=PRICE_PER_DEVICE_HOUR with NPU one of {npus} and "
                             "a number >= 0, e.g. --price atom=1.2,rngd=2.5")
        prices[name.strip()] = price
    return prices


def cmd_plan_serving(args: argparse.Namespace) -> None:
    from optimum_npu.planner.serving_sim.candidates import bucket_sets
    from optimum_npu.planner.serving_sim.metrics import parse_slo
    from optimum_npu.planner.serving_sim.plan_serving import plan_serving, write_outputs
    from optimum_npu.planner.serving_sim.report import format_summary
    from optimum_npu.planner.workload import load_workload

    npus = _list(args.npu)
    slo = parse_slo(args.slo)                       # bad input raises ValueError naming the field, before any work
    prices = parse_prices(args.price, npus)
    bucket_sets(1, _list(args.bucket_sets))         # an unknown set name is refused here, before any capture
    workload = load_workload(args.workload, args.requests)
    if args.rate:
        workload = type(workload)(tuple(workload.at_rate(args.rate)), args.rate,
                                  workload.description + f", at {args.rate:g} req/s")
    import torch

    torch.set_num_threads(1)   # replays are single-threaded Python; a thread pool only slows the small cost evaluations
    result = plan_serving(args.model, workload, slo, npus, _list(args.quantization), args.batch_sizes,
                          args.max_seq_len, args.tensor_parallel_size, prices=prices,
                          bucket_sets=_list(args.bucket_sets))
    print(f"{args.model}: {workload.description}; SLO {args.slo}")
    print(format_summary(result.outcomes))
    if args.out:
        for path in write_outputs(result, Path(args.out)):
            print(f"wrote {path}")


def add_plan_serving_command(commands: argparse._SubParsersAction) -> None:
    """Adds ``optimum-npu plan-serving`` to the CLI's subcommands."""
    parser = commands.add_parser(
        "plan-serving", help="cheapest hardware and compile envelope meeting a latency SLO for a workload",
        description="Replays a workload (Poisson/gamma arrivals or a JSON-lines trace) through the serving "
                    "scheduler on graph costs from weightless captures, for every candidate deployment (NPU preset, "
                    "tensor-parallel size, replicas, decode buckets, batch size, quantization, prefix caching); "
                    "prints the cheapest one per preset meeting the SLO, and writes report.md and PNG plots.")
    parser.add_argument("model", help="a config.json path, a model directory or a built-in shape (llama-3-8b, ...)")
    parser.add_argument("--workload", required=True, help="workload JSON file (docs/capacity_planning.md)")
    parser.add_argument("--slo", required=True, help="latency objectives in seconds, e.g. ttft_p99=0.5,itl_p99=0.05 "
                                                      "(metrics ttft, itl, tpot, e2e; percentiles p50, p90, p99)")
    parser.add_argument("--npu", default="atom,rngd,a100-80gb", help="presets to compare (default atom,rngd,a100-80gb)")
    parser.add_argument("--quantization", default="none", help="weight formats to compare: none,int8,int4,fp8 "
                                                               "(default none)")
    parser.add_argument("--price", help="price per device-hour per preset, e.g. atom=1.2,rngd=2.5 (ranks by cost)")
    parser.add_argument("--batch-sizes", type=_int_list, default=[16, 64], help="batch envelopes (default 16,64)")
    parser.add_argument("--max-seq-len", type=_int_list, help="max_seq_len envelopes (default: the smallest power "
                                                              "of two holding the longest request)")
    parser.add_argument("--bucket-sets", default="pow2,top2,max",
                        help="decode bucket sets compared, by name: pow2 (1,2,4,..,B), step8 (1,2,4, then multiples "
                             "of 8 up to B), top3 (B/4,B/2,B), top2 (B/2,B), max (B alone); default pow2,top2,max")
    parser.add_argument("--tensor-parallel-size", type=_int_list, default=[1, 2, 4, 8],
                        help="tensor-parallel sizes (default 1,2,4,8)")
    parser.add_argument("--requests", type=int, help="requests replayed per probe (default: the workload's count)")
    parser.add_argument("--rate", type=float, help="serve at this rate (req/s) instead of the workload's own")
    parser.add_argument("--out", help="folder for report.md and the PNG plots")
    parser.set_defaults(func=cmd_plan_serving)
