"""Compile (cache miss) versus compile-cache hit, side by side, for models built in code.

Each size is compiled once into an empty cache, then "compiled" twice more (hits). The times
are ``from_pretrained(checkpoint, export=True)`` wall clock, loading the checkpoint and the
artifact included. Nothing is downloaded; the cache lives in a temporary directory.

    python bench/bench_compile_cache.py [--sizes tiny,demo,bench]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="tiny,demo,bench", help="model sizes of optimum_npu.models.tiny.SIZES")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="optimum-npu-bench-cache-") as work:
        os.environ["OPTIMUM_NPU_CACHE"] = str(Path(work) / "cache")
        run(args.sizes.split(","), Path(work))


def run(sizes: list[str], work: Path) -> None:
    from optimum_npu import NPUModelForCausalLM
    from optimum_npu.models.tiny import save_causal_lm

    knobs = {"max_seq_len": 256, "batch_size": 4, "prefill_chunk_size": 32}
    print(f"knobs {knobs}\n| model | compile (miss) s | cache hit s | ratio |\n|---|---|---|---|")
    for size in sizes:
        checkpoint = save_causal_lm(work / size, "LlamaForCausalLM", size=size)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            NPUModelForCausalLM.from_pretrained(checkpoint, export=True, npu_config=knobs).release()
            times.append(time.perf_counter() - start)
        hit = min(times[1:])
        print(f"| {size} | {times[0]:.3f} | {hit:.3f} | {times[0] / hit:.0f}x |")


if __name__ == "__main__":
    main()
