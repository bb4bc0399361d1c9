"""Serving benchmark: a Poisson workload through real HTTP, decode buckets [1, 2, 4, 8] versus [8] alone.

Builds a Llama-shaped model in code (random weights, nothing downloaded), compiles it twice (the same
weights, batch 8, decode graphs [1, 2, 4, 8] and [8] only), serves each artifact with
``optimum-npu serve``'s server on loopback and replays the same workload against both: requests arrive
as a Poisson process at several rates (wall-clock), prompt and output lengths are drawn uniformly, all
from a fixed seed. Each request is a real ``POST /v1/completions``; the simulated timings come back in
the response's ``npu`` field and the scheduler's counters from ``/metrics``.

Reported per configuration and rate: simulated-NPU decode throughput (generated tokens per simulated
busy second), TTFT and ITL p50/p99 on the simulated clock, the bucket histogram, decode padding waste,
preemptions, and the host's own wall-clock throughput of the simulation.

    python bench/bench_serving.py [--rates 2,8,32] [--requests 32] [--size demo] [--seed 0]
"""

from __future__ import annotations

import argparse
import re
import tempfile
import threading
import time
from pathlib import Path

import httpx2
import torch

from optimum_npu import NPUModelForCausalLM
from optimum_npu.models.tiny import build_causal_lm, build_tokenizer
from optimum_npu.serving.server import NPUServer, ServerOptions

CONFIGS = {"[1,2,4,8]": [1, 2, 4, 8], "[8]": [8]}
COUNTERS = ("vllm:generation_tokens_total", "vllm:prompt_tokens_total", "vllm:num_preemptions_total",
            "optimum_npu:simulated_busy_seconds_total", "optimum_npu:decode_padded_rows_total")


def compile_artifacts(root: Path, size: str, max_seq_len: int, kv_blocks: int | None) -> dict[str, Path]:
    hf_model = build_causal_lm("LlamaForCausalLM", size=size, seed=0)
    tokenizer_dir = root / "tokenizer"
    build_tokenizer().save_pretrained(tokenizer_dir)
    artifacts = {}
    for name, sizes in CONFIGS.items():
        knobs = {"max_seq_len": max_seq_len, "batch_size": 8, "decoder_batch_sizes": sizes, "prefill_chunk_size": 32,
                 "kvcache_block_size": 32, **({"kvcache_num_blocks": kv_blocks} if kv_blocks else {})}
        model = NPUModelForCausalLM.from_model(hf_model, npu_config=knobs, tokenizer_dir=tokenizer_dir,
                                               compile_cache=False)
        artifacts[name] = root / f"artifact-{len(sizes)}"
        model.save_pretrained(artifacts[name])
        model.release()
    return artifacts


def workload(count: int, rate: float, seed: int, max_seq_len: int) -> list[tuple[float, str, int]]:
    """(arrival offset s, prompt, max_tokens) of each request: Poisson arrivals, uniform lengths."""
    rng = torch.Generator().manual_seed(seed)
    gaps = torch.empty(count).exponential_(rate, generator=rng)
    arrivals = torch.cumsum(gaps, 0).tolist()
    items = []
    for arrival in arrivals:
        prompt_len = int(torch.randint(8, max_seq_len // 2, (1,), generator=rng))
        out_len = int(torch.randint(8, max_seq_len // 4, (1,), generator=rng))
        letters = torch.randint(97, 123, (prompt_len,), generator=rng).tolist()
        items.append((arrival, "".join(map(chr, letters)), out_len))
    return items


def scrape(url: str) -> tuple[dict[str, float], dict[str, float]]:
    """The counters of ``COUNTERS`` and the bucket histogram from /metrics."""
    text = httpx2.get(f"{url}/metrics").text
    counters = {name: float(re.search(rf"^{re.escape(name)}{{[^}}]*}} (\S+)$", text, re.M).group(1))
                for name in COUNTERS}
    buckets = {m.group(1): float(m.group(2)) for m in
               re.finditer(r'^optimum_npu:bucket_steps_total{graph="([^"]+)"[^}]*} (\S+)$', text, re.M)}
    return counters, buckets


def replay(url: str, items) -> tuple[list[dict], float]:
    """Sends every request at its arrival time (one thread each); returns the ``npu`` timings and the wall span."""
    results: list[dict] = []
    start = time.perf_counter()

    def send(arrival: float, prompt: str, max_tokens: int) -> None:
        time.sleep(max(0.0, start + arrival - time.perf_counter()))
        reply = httpx2.post(f"{url}/v1/completions", timeout=600, json={
            "model": "bench", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True})
        reply.raise_for_status()
        results.append(reply.json()["npu"][0])

    threads = [threading.Thread(target=send, args=item) for item in items]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def run_config(artifact: Path, rates: list[float], count: int, seed: int, max_seq_len: int, port: int) -> list[dict]:
    server = NPUServer(artifact, ServerOptions(port=port, served_model_name="bench", log_level="warning"))
    server.start_background()
    rows = []
    try:
        for index, rate in enumerate(rates):   # each rate its own prompts, so no rate reuses another's prefixes
            before, buckets_before = scrape(server.url)
            results, wall = replay(server.url, workload(count, rate, seed * 1000 + index, max_seq_len))
            after, buckets_after = scrape(server.url)
            delta = {name: after[name] - before[name] for name in COUNTERS}
            steps = {g: buckets_after[g] - buckets_before.get(g, 0) for g in buckets_after}
            decode_rows = sum(n * int(g.rsplit("_", 1)[1]) for g, n in steps.items() if g.startswith("decoder_batch_"))
            ttft = [r["simulated_ttft_s"] for r in results]
            itl = [gap for r in results for gap in r["simulated_itl_s"]]
            tokens = delta["vllm:generation_tokens_total"]
            rows.append({
                "rate": rate, "sim_tok_s": tokens / delta["optimum_npu:simulated_busy_seconds_total"],
                "ttft_p50": percentile(ttft, 0.5), "ttft_p99": percentile(ttft, 0.99),
                "itl_p50": percentile(itl, 0.5), "itl_p99": percentile(itl, 0.99),
                "padding": delta["optimum_npu:decode_padded_rows_total"] / decode_rows if decode_rows else 0.0,
                "preemptions": int(delta["vllm:num_preemptions_total"]), "host_tok_s": tokens / wall,
                "buckets": {g: int(n) for g, n in sorted(steps.items()) if n}})
    finally:
        server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="2,8,32", help="request rates (requests per wall second), comma separated")
    parser.add_argument("--requests", type=int, default=32, help="requests per rate (default 32)")
    parser.add_argument("--size", default="demo", choices=["tiny", "demo", "bench"], help="model size preset")
    parser.add_argument("--max-seq-len", type=int, default=256, help="compiled max_seq_len (default 256)")
    parser.add_argument("--kv-blocks", type=int, help="compiled KV pool in blocks of 32 (default: 8 full sequences)")
    parser.add_argument("--seed", type=int, default=0, help="workload seed (default 0)")
    parser.add_argument("--port", type=int, default=8357, help="loopback port for the server (default 8357)")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = compile_artifacts(Path(tmp), args.size, args.max_seq_len, args.kv_blocks)
        results = {name: run_config(path, rates, args.requests, args.seed, args.max_seq_len, args.port)
                   for name, path in artifacts.items()}
    print(f"model size {args.size!r}, batch 8, {args.requests} requests per rate, seed {args.seed}; simulated "
          "times in ms on the NPU clock, sim tok/s = generated tokens per simulated busy second")
    header = (f"{'buckets':<10} {'rate/s':>6} {'sim tok/s':>10} {'TTFT p50':>9} {'TTFT p99':>9} {'ITL p50':>8} "
              f"{'ITL p99':>8} {'padding':>8} {'preempt':>7} {'host tok/s':>10}  bucket histogram")
    print(header)
    for name, rows in results.items():
        for row in rows:
            print(f"{name:<10} {row['rate']:>6.0f} {row['sim_tok_s']:>10.0f} {row['ttft_p50'] * 1e3:>9.3f} "
                  f"{row['ttft_p99'] * 1e3:>9.3f} {row['itl_p50'] * 1e3:>8.3f} {row['itl_p99'] * 1e3:>8.3f} "
                  f"{row['padding']:>8.1%} {row['preemptions']:>7} {row['host_tok_s']:>10.1f}  "
                  + ", ".join(f"{g} x{n}" for g, n in row["buckets"].items()))
    for (small, large) in zip(results["[1,2,4,8]"], results["[8]"]):
        print(f"rate {small['rate']:.0f}/s: [1,2,4,8] vs [8]: sim throughput x{small['sim_tok_s'] / large['sim_tok_s']:.2f}, "
              f"ITL p50 x{small['itl_p50'] / large['itl_p50']:.2f}, padding {small['padding']:.1%} vs "
              f"{large['padding']:.1%}")


if __name__ == "__main__":
    main()
