"""Simulated-NPU generate() versus eager Transformers generate() on the same CPU, side by side.

Builds a ~76M-parameter Llama-shaped model in code (random weights, nothing downloaded),
compiles it for tensor_parallel_size 1, 2 and 4, and for batch 1 and 4 times the same greedy
generation through eager Transformers and every simulator, in one run, rotating the order of
the runs each repeat so that machine noise hits all alike. A TP>1 simulator runs its ranks two
ways, timed as two contestants on the same loaded model: ``lock`` (one interpretation over the
ranks' stacked tensors, ``device/lockstep.py``, the default) and ``rank`` (every rank in turn,
``OPTIMUM_NPU_TP_LOCKSTEP=0``). Prints host tokens/s, the simulator/eager ratio, TP=k/TP=1 host
time, whether the tokens agree, and this CPU's bandwidth bound measured in the same run: the bytes a
decode step must read (every weight matrix once) over the GEMV bandwidth of those same matrices.

    python bench/bench_generate.py [--new-tokens 64] [--repeats 5] [--tp 1 2 4] [--size bench] [--threads N]
                                   [--tp-paths lock rank] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import time

os.environ.setdefault("TQDM_DISABLE", "1")  # no compile progress bars between the figures

import torch
import torch.nn.functional as F

from optimum_npu import NPUModelForCausalLM
from optimum_npu.models.tiny import build_causal_lm, build_tokenizer

PROMPT = "The simulated NPU runs the compiled graphs with real arithmetic and accounts for time."
BATCHES = (1, 4)


def timed_generate(model, inputs, new_tokens: int) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    output = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    elapsed = time.perf_counter() - start
    assert output.shape[1] == inputs["input_ids"].shape[1] + new_tokens
    return elapsed, output


def weight_matrices(hf_model) -> list[torch.Tensor]:
    """The matrices a decode step streams once each (every Linear; the embedding reads one row per token)."""
    return [m.weight.detach() for m in hf_model.modules() if isinstance(m, torch.nn.Linear)]


def gemv_bandwidth(matrices: list[torch.Tensor], repeats: int = 5) -> float:
    """Bytes/s of one-row matmuls over ``matrices`` in sequence (best of ``repeats``)."""
    rows = {w.shape[1]: torch.randn(1, w.shape[1], dtype=w.dtype) for w in matrices}
    total = sum(w.nbytes for w in matrices)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for w in matrices:
            F.linear(rows[w.shape[1]], w)
        best = min(best, time.perf_counter() - start)
    return total / best


def profile_top(model, inputs, new_tokens: int, count: int = 12) -> str:
    """cProfile of one simulated generate(): the ``count`` entries with the most own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(count)
    text = out.getvalue()
    return text[text.index("   ncalls"):].rstrip() if "   ncalls" in text else text


def compile_models(hf_model, tps: list[int], npu: str) -> dict[int, NPUModelForCausalLM]:
    models = {}
    for tp in tps:
        start = time.perf_counter()
        models[tp] = NPUModelForCausalLM.from_model(hf_model, npu_config={
            "max_seq_len": 256, "batch_size": 4, "decoder_batch_sizes": [1, 2, 4], "prefill_chunk_size": 128,
            "npu": npu, "tensor_parallel_size": tp, "device": 0 if tp == 1 else tp},
            compile_cache=False)  # time a real compile, not a cache hit
        print(f"compile TP={tp}: {time.perf_counter() - start:.2f} s for {len(models[tp].npu_graphs)} graphs")
    return models


class RankPath:
    """A TP>1 simulator run with its ranks in lockstep (``lock``) or one after another (``rank``)."""

    def __init__(self, model: NPUModelForCausalLM, path: str):
        self.model, self.path = model, path

    def generate(self, **kwargs):
        self.model._runtime.engine.lockstep = self.path == "lock"
        return self.model.generate(**kwargs)

    @property
    def npu_stats(self):
        return self.model.npu_stats


def contestants_of(hf_model, models: dict, paths: list[str]) -> dict:
    """``eager``, ``(1, "")`` and ``(tp, path)`` for each TP>1 model and rank path."""
    found: dict = {"eager": hf_model}
    for tp, model in models.items():
        for path in ([""] if tp == 1 else paths):
            found[(tp, path)] = model if tp == 1 else RankPath(model, path)
    return found


def run_batch(contestants: dict, inputs, new_tokens: int, repeats: int) -> tuple[dict, dict, dict]:
    """Host seconds per contestant, their last outputs and (simulators) simulated stats, rotating the order."""
    for model in contestants.values():
        timed_generate(model, inputs, 4)  # warm-up
    seconds: dict = {name: [] for name in contestants}
    outputs: dict = {}
    stats: dict = {}
    names = list(contestants)
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            elapsed, outputs[name] = timed_generate(contestants[name], inputs, new_tokens)
            seconds[name].append(elapsed)
            stats[name] = getattr(contestants[name], "npu_stats", None)
    return seconds, outputs, stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--npu", default="atom")
    parser.add_argument("--size", default="bench", help="tiny-model size preset: bench (76M) or demo (3M)")
    parser.add_argument("--tp", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--profile", action="store_true", help="also print cProfile's top entries of each simulator")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--tp-paths", nargs="+", choices=["lock", "rank"], default=["lock", "rank"],
                        help="how TP>1 simulators run their ranks: lock (lockstep) and/or rank (one by one)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    hf_model = build_causal_lm("LlamaForCausalLM", size=args.size)
    params = sum(p.numel() for p in hf_model.parameters())
    tokenizer = build_tokenizer()
    models = compile_models(hf_model, args.tp, args.npu)
    print(f"model: Llama-shaped, {params / 1e6:.1f}M parameters, fp32, {args.new_tokens} new tokens, median of "
          f"{args.repeats} runs in rotating order, torch threads {torch.get_num_threads()}")
    contestants = contestants_of(hf_model, models, args.tp_paths)
    simulators = [name for name in contestants if name != "eager"]
    print(f"{'batch':>5} {'TP':>3} {'ranks':>5} {'eager tok/s':>12} {'npu-sim tok/s':>14} {'sim/eager':>10} "
          f"{'TP/TP1 host':>12} {'tokens = eager':>15} {'sim TTFT ms':>12} {'sim ms/step':>12}")
    best_tps = {}
    for batch in BATCHES:
        inputs = tokenizer([PROMPT] * batch, return_tensors="pt", padding=True)
        seconds, outputs, sim_stats = run_batch(contestants, inputs, args.new_tokens, args.repeats)
        tokens = batch * args.new_tokens
        eager = statistics.median(seconds["eager"])
        best_tps[batch] = {"eager": tokens / min(seconds["eager"])}
        for name in simulators:
            tp, path = name
            sim = statistics.median(seconds[name])
            best_tps[batch][name] = tokens / min(seconds[name])
            stats = sim_stats[name]
            same = torch.equal(outputs[name], outputs["eager"])
            print(f"{batch:>5} {tp:>3} {path or '-':>5} {tokens / eager:>12.1f} {tokens / sim:>14.1f} "
                  f"{eager / sim:>10.2f} {sim / statistics.median(seconds[simulators[0]]):>12.2f} {str(same):>15} "
                  f"{stats.ttft_s * 1e3:>12.3f} {stats.decode_s_per_token * 1e3:>12.3f}")
    matrices = weight_matrices(hf_model)
    step_bytes = sum(w.nbytes for w in matrices)
    bandwidth = gemv_bandwidth(matrices)
    print(f"\nbandwidth bound: a decode step reads {step_bytes / 2**20:.1f} MiB of weights; measured GEMV bandwidth "
          f"{bandwidth / 1e9:.1f} GB/s -> {step_bytes / bandwidth * 1e3:.2f} ms/step at best")
    labels = ["eager"] + [f"TP{tp} {path}".strip() for tp, path in simulators]
    print(f"{'batch':>5} {'bound tok/s':>12} " + " ".join(f"{label:>14}" for label in labels))
    for batch in BATCHES:
        bound = batch * bandwidth / step_bytes
        shares = [f"{100 * best_tps[batch][name] / bound:>13.0f}%" for name in ["eager", *simulators]]
        print(f"{batch:>5} {bound:>12.1f} " + " ".join(shares) + "   (best run's tok/s as % of the bound; "
              "TP columns: the simulator)")
    if args.profile:
        for batch in BATCHES:
            inputs = tokenizer([PROMPT] * batch, return_tensors="pt", padding=True)
            for name in simulators:
                tp, path = name
                print(f"\ncProfile, simulator TP={tp} {path}, batch {batch}, one generate():")
                print(profile_top(contestants[name], inputs, args.new_tokens))


if __name__ == "__main__":
    main()
