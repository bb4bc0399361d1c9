"""Encoder-decoder generation on the simulated NPU: compile T5 or BART, translate with greedy and beam search.

    python examples/translation.py                                   # a tiny random T5 built in code
    python examples/translation.py --architecture BartForConditionalGeneration
    python examples/translation.py --model path/to/t5-checkpoint --encoder-seq-lens 64,128 --max-seq-len 128

The encoder runs once per input on its smallest (batch, length) bucket; every decoder row (input x beam) writes its
cross-attention keys/values in its slot at prefill, then all rows decode together on the smallest decode batch.
The tiny model is random, so its output is a word salad; the figures are what the example shows.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from transformers import AutoTokenizer

from optimum_npu import NPUModelForSeq2SeqLM
from optimum_npu.models.seq2seq.tiny import save_seq2seq

TEXTS = ["translate english to german: the cat sat on the mat .", "translate english to french: good morning world"]


def int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="an HF T5/BART checkpoint directory (default: a tiny one built in code)")
    parser.add_argument("--architecture", default="T5ForConditionalGeneration",
                        choices=["T5ForConditionalGeneration", "BartForConditionalGeneration"],
                        help="the tiny model's architecture (without --model)")
    parser.add_argument("--encoder-seq-lens", type=int_list, default=[16, 32], help="encoder buckets (default 16,32)")
    parser.add_argument("--max-seq-len", type=int, default=32, help="longest decoder sequence (default 32)")
    parser.add_argument("--num-beams", type=int, default=2, help="beams of the beam-search run (default 2)")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--output", help="also save the compiled artifact here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        checkpoint = Path(args.model) if args.model else save_seq2seq(args.architecture, Path(work) / "tiny")
        rows = len(TEXTS) * args.num_beams
        config = {"encoder_seq_lens": args.encoder_seq_lens, "encoder_batch_sizes": [1, len(TEXTS)],
                  "max_seq_len": args.max_seq_len, "batch_size": rows, "decoder_batch_sizes": sorted({1, rows}),
                  "prefill_chunk_size": 1}
        model = NPUModelForSeq2SeqLM.from_pretrained(checkpoint, export=True, npu_config=config)
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        print(f"compiled {len(model.npu_graphs)} graphs: {', '.join(model.npu_graphs)}")
        batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
        for beams in (1, args.num_beams):
            out = model.generate(**batch, num_beams=beams, max_new_tokens=args.max_new_tokens, do_sample=False)
            for text, ids in zip(TEXTS, out):
                print(f"[beams={beams}] {text!r} -> {tokenizer.decode(ids, skip_special_tokens=True)!r}")
            print(f"  npu_stats: {model.npu_stats}")
        if args.output:
            model.save_pretrained(args.output)
            print(f"artifact saved to {args.output}")
        model.release()


if __name__ == "__main__":
    main()
