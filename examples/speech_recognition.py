"""Speech recognition on the simulated NPU: compile Whisper and transcribe with the ASR pipeline.

    python examples/speech_recognition.py                       # a tiny random Whisper built in code, a synthetic WAV
    python examples/speech_recognition.py --model path/to/whisper-checkpoint --audio speech.wav

Whisper's encoder takes a fixed mel window, so its buckets are batch sizes; longer audio is cut into windows by the
pipeline (``chunk_length_s``). The tiny model is random: its transcript is noise, the figures are what it shows.
"""

from __future__ import annotations

import argparse
import tempfile
import wave
from pathlib import Path

import numpy as np
from transformers import AutoFeatureExtractor, AutoTokenizer, pipeline

from optimum_npu import NPUModelForSpeechSeq2Seq
from optimum_npu.models.seq2seq.tiny_whisper import save_whisper


def read_audio(path: str | None, rate: int) -> np.ndarray:
    """A 16-bit mono WAV (``path``) or 2.5 s of two tones."""
    if path is None:
        t = np.arange(int(2.5 * rate)) / rate
        return (0.4 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1250 * t)).astype(np.float32)
    with wave.open(path) as wav:
        if wav.getsampwidth() != 2 or wav.getnchannels() != 1 or wav.getframerate() != rate:
            raise SystemExit(f"{path}: give a 16-bit mono WAV at {rate} Hz")
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).astype(np.float32) / 32767


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="an HF Whisper checkpoint directory (default: a tiny one built in code)")
    parser.add_argument("--audio", help="a 16-bit mono WAV at the feature extractor's rate (default: synthetic)")
    parser.add_argument("--language", default="en")
    parser.add_argument("--max-seq-len", type=int, default=64, help="longest decoder sequence (default 64)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        checkpoint = Path(args.model) if args.model else save_whisper(Path(work) / "tiny-whisper")
        config = {"encoder_batch_sizes": [1, 2], "max_seq_len": args.max_seq_len, "batch_size": 2,
                  "decoder_batch_sizes": [1, 2]}
        model = NPUModelForSpeechSeq2Seq.from_pretrained(checkpoint, export=True, npu_config=config)
        extractor = AutoFeatureExtractor.from_pretrained(checkpoint)
        asr = pipeline("automatic-speech-recognition", model=model, tokenizer=AutoTokenizer.from_pretrained(checkpoint),
                       feature_extractor=extractor)
        print(f"compiled {len(model.npu_graphs)} graphs: {', '.join(model.npu_graphs)}")
        audio = read_audio(args.audio, extractor.sampling_rate)
        result = asr({"raw": audio, "sampling_rate": extractor.sampling_rate}, chunk_length_s=extractor.chunk_length,
                     return_timestamps=True, generate_kwargs={"language": args.language, "max_new_tokens": 16, "num_beams": 1})
        print(f"{audio.size / extractor.sampling_rate:.1f} s of audio -> {len(result['chunks'])} segments")
        print(f"  npu_stats (last window): {model.npu_stats}")
        model.release()


if __name__ == "__main__":
    main()
