"""Fusion on/off, side by side: simulated prefill and decode estimates of the cost model.

Builds each model on the ``meta`` device (no weights, nothing executed), captures its
graphs and costs them with and without the fusion pass, on several specs.

    python bench/bench_fusion.py [--sizes tiny bench] [--npus atom rngd h100-sxm]
"""

from __future__ import annotations

import argparse
import time

import torch

from optimum_npu.device.cost import GraphCostModel
from optimum_npu.device.spec import resolve_spec
from optimum_npu.models.decoder.estimate import decode_step_seconds, meta_cost_models, prefill_seconds
from optimum_npu.models.tiny import build_causal_lm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "bench"])
    parser.add_argument("--npus", nargs="+", default=["atom", "rngd", "h100-sxm"])
    parser.add_argument("--dtype", default="float16")
    parser.add_argument("--prompt", type=int, default=512, help="prompt tokens to prefill")
    parser.add_argument("--context", type=int, default=512, help="context length of the decode step")
    args = parser.parse_args()
    print(f"{'model':<6} {'npu':<9} {'phase':<18} {'unfused ms':>11} {'fused ms':>10} {'fused/unfused':>14}")
    for size in args.sizes:
        hf_config = build_causal_lm("LlamaForCausalLM", size=size).config
        for npu in args.npus:
            knobs = {"max_seq_len": 1024, "batch_size": 8, "decoder_batch_sizes": [1, 8], "prefill_chunk_size": 128,
                     "dtype": args.dtype, "npu": npu, "attn_impl": "flash_attn", "kvcache_partition_len": 256}
            start = time.perf_counter()
            _, costs = meta_cost_models(hf_config, knobs, ["prefill", "decoder_batch_1", "decoder_batch_8"])
            spec = resolve_spec(npu)
            rows = []
            for label, graph, run in (
                    (f"prefill {args.prompt} tok", "prefill", lambda c: prefill_seconds(c, 128, args.prompt)),
                    ("decode batch 1", "decoder_batch_1", lambda c: decode_step_seconds(c, 1, args.context)),
                    ("decode batch 8", "decoder_batch_8", lambda c: decode_step_seconds(c, 8, args.context))):
                graph_ir = costs[graph].index.graph
                unfused = run(GraphCostModel(graph_ir, spec, args.dtype, fuse=False))
                fused = run(costs[graph])
                rows.append((label, unfused, fused))
            for label, unfused, fused in rows:
                print(f"{size:<6} {npu:<9} {label:<18} {unfused * 1e3:11.4f} {fused * 1e3:10.4f} "
                      f"{fused / unfused:14.3f}")
            print(f"  ({time.perf_counter() - start:.1f} s to capture and cost)")


if __name__ == "__main__":
    with torch.no_grad():
        main()
