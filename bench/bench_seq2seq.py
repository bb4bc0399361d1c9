"""Encoder-decoder generation on the simulator versus eager Transformers, side by side in one run.

For tiny T5, BART (built in code) and Whisper, the same batch is generated greedily and with beam search by the
compiled model and by eager Transformers on the host CPU. Reported per case: host wall time of both and their ratio
(the simulator interprets graphs: it is not meant to be fast on the host), whether the tokens are identical, and the
simulated device figures (encoder time, cross-KV + prompt time, decode ms/step, beam-copy time, memory).

    python bench/bench_seq2seq.py [--new-tokens 16] [--repeats 3] [--npu atom]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import AutoTokenizer

from optimum_npu import NPUModelForSeq2SeqLM, NPUModelForSpeechSeq2Seq
from optimum_npu.models.seq2seq.tiny import save_seq2seq
from optimum_npu.models.seq2seq.tiny_whisper import SAMPLING_RATE, build_feature_extractor, save_whisper

TEXTS = ["translate english to german: the cat sat on the mat .", "hello world",
         "summarize: the big red car is fast and the sun is hot ."]


def timed(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def cases(work: Path, npu: str, knobs: dict | None = None):
    """(name, compiled model, eager model, generate() inputs) of tiny T5, BART and Whisper; ``knobs``: more compile
    knobs (``bench_seq2seq_tp.py``: ``tensor_parallel_size``)."""
    config = {"encoder_seq_lens": [16, 32], "encoder_batch_sizes": [1, 4], "max_seq_len": 64, "batch_size": 8,
              "decoder_batch_sizes": [1, 4, 8], "prefill_chunk_size": 1, "npu": npu, **(knobs or {})}
    for arch in ("T5ForConditionalGeneration", "BartForConditionalGeneration"):
        checkpoint = work / arch if (work / arch).is_dir() else save_seq2seq(arch, work / arch)
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        yield (arch, NPUModelForSeq2SeqLM.from_pretrained(checkpoint, export=True, npu_config=config),
               getattr(transformers, arch).from_pretrained(checkpoint).eval(),
               dict(tokenizer(TEXTS, return_tensors="pt", padding=True)))
    checkpoint = work / "whisper" if (work / "whisper").is_dir() else save_whisper(work / "whisper")
    t = np.arange(int(0.9 * SAMPLING_RATE)) / SAMPLING_RATE
    clips = [(0.5 * np.sin(2 * np.pi * f * t)).astype(np.float32) for f in (440, 300, 880)]
    features = build_feature_extractor()(clips, sampling_rate=SAMPLING_RATE, return_tensors="pt").input_features
    whisper = {k: v for k, v in config.items() if k not in ("encoder_seq_lens", "prefill_chunk_size")}
    yield ("WhisperForConditionalGeneration",
           NPUModelForSpeechSeq2Seq.from_pretrained(checkpoint, export=True, npu_config=whisper),
           transformers.WhisperForConditionalGeneration.from_pretrained(checkpoint).eval(),
           {"input_features": features, "language": "en"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--npu", default="atom")
    args = parser.parse_args()
    print(f"{'model':34} {'beams':>5} {'eager s':>8} {'npu s':>8} {'ratio':>6} {'same':>5}  simulated")
    with tempfile.TemporaryDirectory() as work, torch.no_grad():
        for name, npu, eager, inputs in cases(Path(work), args.npu):
            for beams in (1, 2):
                kwargs = dict(inputs, num_beams=beams, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                              do_sample=False)
                eager_s, want = timed(lambda: eager.generate(**kwargs), args.repeats)
                npu_s, got = timed(lambda: npu.generate(**kwargs), args.repeats)
                stats = npu.npu_stats
                print(f"{name:34} {beams:>5} {eager_s:8.3f} {npu_s:8.3f} {npu_s / eager_s:6.1f} "
                      f"{str(torch.equal(want, got)):>5}  encoder {stats.encoder_s * 1e3:.3f} ms, cross-KV+prompt "
                      f"{stats.cross_kv_s * 1e3:.3f} ms, decode {stats.decode_s_per_token * 1e3:.4f} ms/step, "
                      f"beam copies {stats.beam_copy_s * 1e3:.4f} ms")
            print(f"{'':34} memory per device: {stats.memory}, KV pools {stats.kv_pools}")
            npu.release()


if __name__ == "__main__":
    main()
