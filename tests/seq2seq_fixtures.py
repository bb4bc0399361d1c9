"""Tiny T5 and BART compiled once per session (the ``seq2seq_models`` fixture, registered in conftest.py)."""

from __future__ import annotations

import pytest
import transformers

from optimum_npu.models.seq2seq.modeling import NPUModelForSeq2SeqLM
from optimum_npu.models.seq2seq.speech import NPUModelForSpeechSeq2Seq
from optimum_npu.models.seq2seq.tiny import save_seq2seq
from optimum_npu.models.seq2seq.tiny_whisper import save_whisper

ARCHITECTURES = ["T5ForConditionalGeneration", "BartForConditionalGeneration", "PegasusForConditionalGeneration"]
#: Two encoder length buckets (inputs land in either), one encoder batch bucket, decode batches 1 and 8 (3 inputs
#: x 2 beams = 6 rows run on 8).
NPU_CONFIG = {"encoder_seq_lens": [8, 16], "encoder_batch_sizes": [4], "max_seq_len": 32, "batch_size": 8,
              "decoder_batch_sizes": [1, 8], "prefill_chunk_size": 1}


class _Compiled(dict):
    """architecture -> (reloaded NPU model, eager HF model, artifact dir with the tokenizer), compiled on first use."""

    def __init__(self, root_factory):
        super().__init__()
        self._root_factory = root_factory

    def __missing__(self, architecture: str):
        root = self._root_factory(architecture)
        checkpoint = save_seq2seq(architecture, root / "hf")
        npu = NPUModelForSeq2SeqLM.from_pretrained(checkpoint, export=True, npu_config=NPU_CONFIG,
                                                   compile_cache=False)
        npu.save_pretrained(root / "npu")
        npu.release()
        eager = getattr(transformers, architecture).from_pretrained(checkpoint).eval()
        self[architecture] = (NPUModelForSeq2SeqLM.from_pretrained(root / "npu"), eager, root / "npu")
        return self[architecture]


@pytest.fixture(scope="session")
def seq2seq_models(tmp_path_factory):
    """Tiny T5, BART and Pegasus, each compiled, saved and reloaded once per session when a test first asks."""
    models = _Compiled(tmp_path_factory.mktemp)
    yield models
    for npu, _, _ in models.values():
        npu.release()


#: Whisper: encoder batches 1 and 4 of its one-second window; 3 clips x 2 beams run on decode batch 8.
WHISPER_CONFIG = {"encoder_batch_sizes": [1, 4], "batch_size": 8, "decoder_batch_sizes": [1, 8], "max_seq_len": 64}


@pytest.fixture(scope="session")
def whisper(tmp_path_factory):
    """(reloaded NPU Whisper, eager Whisper, artifact dir with tokenizer and feature extractor); compiled once."""
    root = tmp_path_factory.mktemp("whisper")
    checkpoint = save_whisper(root / "hf")
    compiled = NPUModelForSpeechSeq2Seq.from_pretrained(checkpoint, export=True, npu_config=WHISPER_CONFIG,
                                                        compile_cache=False)
    compiled.save_pretrained(root / "npu")
    compiled.release()
    npu = NPUModelForSpeechSeq2Seq.from_pretrained(root / "npu")
    yield npu, transformers.WhisperForConditionalGeneration.from_pretrained(checkpoint).eval(), root / "npu"
    npu.release()
