"""Encoder-decoder models on one device and split over two (``tensor_parallel_size=2``), side by side in one run.

For tiny T5, BART (built in code) and Whisper: the same greedy batch (3 inputs) on the model compiled for one
device and for two. Reported per model and size: tokens identical to one device, per-device weight and KV-pool
bytes, simulated encoder / cross-KV + prompt / decode ms per step and the collectives' part, and the host wall time
ratio (the two ranks run in lockstep in this process).

    python bench/bench_seq2seq_tp.py [--new-tokens 16] [--npu atom]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from bench_seq2seq import cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--npu", default="atom")
    args = parser.parse_args()
    print(f"{'model':34} {'tp':>2} {'same':>5} {'weights B':>10} {'paged B':>9} {'cross B':>9} {'encoder ms':>10} "
          f"{'cross-KV ms':>11} {'decode ms/step':>14} {'collectives ms':>14} {'host s':>7}")
    with tempfile.TemporaryDirectory() as work, torch.no_grad():
        runs = {size: cases(Path(work), args.npu, {"tensor_parallel_size": size}) for size in (1, 2)}
        for (name, one, _, inputs), (_, two, _, _) in zip(runs[1], runs[2]):
            kwargs = dict(inputs, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)
            reference = None
            for size, model in ((1, one), (2, two)):
                start = time.perf_counter()
                tokens = model.generate(**kwargs)
                host = time.perf_counter() - start
                reference = tokens if reference is None else reference
                stats = model.npu_stats
                print(f"{name:34} {size:>2} {str(torch.equal(tokens, reference)):>5} {stats.memory['weights']:>10} "
                      f"{stats.kv_pools['paged']:>9} {stats.kv_pools['cross']:>9} {stats.encoder_s * 1e3:>10.4f} "
                      f"{stats.cross_kv_s * 1e3:>11.4f} {stats.decode_s_per_token * 1e3:>14.4f} "
                      f"{stats.collective_s * 1e3:>14.4f} {host:>7.2f}")
                model.release()


if __name__ == "__main__":
    main()
