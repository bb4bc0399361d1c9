"""The simulator's host fast paths on and off, in one process on one compiled model, alternating.

The device binds linear weights packed for oneDNN (``device/kernels/packed_linear.py``) and merges sibling
linears into one product (``device/linear_merging.py``), runs RMS norms and rotary embeddings as one host
step each (``device/host_fusion.py``), its linear kernel takes the fastest product for each row count, and
it skips the padding rows of a decoder call (``device/kernels/linear.py``, ``real_rows.py``). The "plain"
contestant is the same compiled model loaded a second time with packing (hence merging) and host fusion off
(``OPTIMUM_NPU_PACKED_LINEAR=0``, ``OPTIMUM_NPU_HOST_FUSION=0``), run with ``linear.FAST_PRODUCTS`` off and
no padding skipped: the node-by-node ``F.linear`` execution on every row of the code before issue #19. This measures
the fast paths' effect without the noise of comparing two processes on a shared machine. Prints the
median generate() seconds of each, their ratio, the per-repeat ratios, and whether the tokens agree.

    python bench/bench_host_paths.py [--size bench] [--repeats 5] [--new-tokens 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TQDM_DISABLE", "1")

import torch

from optimum_npu import NPUModelForCausalLM
from optimum_npu.device.host_fusion import HOST_FUSION_ENV
from optimum_npu.device.kernels import linear
from optimum_npu.device.kernels.packed_linear import PACKED_LINEAR_ENV
from optimum_npu.models.tiny import build_causal_lm, build_tokenizer

PROMPT = "The simulated NPU runs the compiled graphs with real arithmetic and accounts for time."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="bench", help="tiny-model size preset: bench (76M) or demo (3M)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fast_model = NPUModelForCausalLM.from_model(build_causal_lm("LlamaForCausalLM", size=args.size), npu_config={
        "max_seq_len": 256, "batch_size": 4, "decoder_batch_sizes": [1, 2, 4], "prefill_chunk_size": 128,
        "npu": "atom"}, compile_cache=False)
    with tempfile.TemporaryDirectory() as folder:
        fast_model.save_pretrained(folder)
        os.environ[PACKED_LINEAR_ENV] = os.environ[HOST_FUSION_ENV] = "0"
        try:
            plain_model = NPUModelForCausalLM.from_pretrained(folder)
        finally:
            del os.environ[PACKED_LINEAR_ENV], os.environ[HOST_FUSION_ENV]
    plain_engine = plain_model._runtime.engine
    plain_engine.skips_padding = dict.fromkeys(plain_engine.skips_padding, False)
    models = {True: fast_model, False: plain_model}

    tokenizer = build_tokenizer()
    print(f"{args.size} model, TP 1, {args.new_tokens} new tokens, median of {args.repeats} alternating runs, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'batch':>5} {'plain s':>8} {'fast s':>8} {'speed-up':>9}  per-repeat speed-ups   tokens equal")
    for batch in (1, 4):
        inputs = tokenizer([PROMPT] * batch, return_tensors="pt", padding=True)
        for model in models.values():
            model.generate(**inputs, max_new_tokens=4, do_sample=False)   # warm-up
        seconds: dict[bool, list[float]] = {True: [], False: []}
        outputs = {}
        for repeat in range(args.repeats):
            for fast in ((True, False) if repeat % 2 == 0 else (False, True)):
                linear.FAST_PRODUCTS = fast
                start = time.perf_counter()
                outputs[fast] = models[fast].generate(**inputs, max_new_tokens=args.new_tokens,
                                                      min_new_tokens=args.new_tokens, do_sample=False)
                seconds[fast].append(time.perf_counter() - start)
        linear.FAST_PRODUCTS = True
        plain, fast = statistics.median(seconds[False]), statistics.median(seconds[True])
        pairs = " ".join(f"{b / a:.2f}" for a, b in zip(seconds[True], seconds[False]))
        print(f"{batch:>5} {plain:>8.2f} {fast:>8.2f} {plain / fast:>9.2f}  {pairs:<22} "
              f"{torch.equal(outputs[True], outputs[False])}")
    fast_model.release()
    plain_model.release()


if __name__ == "__main__":
    main()
