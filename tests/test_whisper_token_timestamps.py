"""Whisper's ``return_token_timestamps=True`` on an artifact compiled with ``npu_config={"token_timestamps": True}``:
the token timestamps (dynamic time warping over the alignment heads' cross-attention) identical to eager
Transformers, and the refusals (no knob, heads not compiled, bad knob, re-signed artifact without the heads)."""

from __future__ import annotations

import json
import shutil

import numpy as np

import pytest
import torch
from transformers import GenerationConfig, pipeline

from optimum_npu.models.decoder.npu_config import NPUConfigError
from optimum_npu.models.seq2seq.speech import NPUModelForSpeechSeq2Seq
from optimum_npu.models.seq2seq.tiny_whisper import (SAMPLING_RATE, build_feature_extractor, build_whisper,
                                                      build_whisper_tokenizer)
from tampering import resign
from test_whisper import CLIPS, _audio, _features

#: One encoder batch of 4 and one decode batch of 4: 3 clips greedy, or 2 clips x 2 beams.
CONFIG = {"encoder_batch_sizes": [4], "batch_size": 4, "decoder_batch_sizes": [4], "max_seq_len": 32}


@pytest.fixture(scope="module")
def timestamped(tmp_path_factory):
    """(reloaded NPU Whisper compiled with token_timestamps, eager Whisper, artifact dir)."""
    eager = build_whisper()
    root = tmp_path_factory.mktemp("whisper_ts")
    compiled = NPUModelForSpeechSeq2Seq.from_model(eager, {**CONFIG, "token_timestamps": True}, compile_cache=False)
    compiled.save_pretrained(root / "npu")
    compiled.release()
    npu = NPUModelForSpeechSeq2Seq.from_pretrained(root / "npu")
    yield npu, eager, root / "npu"
    npu.release()


def _batch(rows: int):
    return build_feature_extractor()(CLIPS[:rows], sampling_rate=SAMPLING_RATE, return_tensors="pt",
                                     return_attention_mask=True)


@pytest.mark.parametrize("rows, options", [
    pytest.param(1, {}, id="greedy-1"),
    pytest.param(3, {}, id="greedy-padded-3"),
    pytest.param(2, {"num_beams": 2}, id="beams-2", marks=pytest.mark.slow)])
def test_token_timestamps_match_eager(timestamped, rows, options):
    npu, eager, _ = timestamped
    batch = _batch(rows)
    kwargs = dict(max_new_tokens=8, language="en", return_token_timestamps=True, return_dict_in_generate=True,
                  **options)
    if rows > 1:   # clips of different lengths: Whisper warps each over its own frames
        kwargs["attention_mask"] = batch.attention_mask
    want, got = eager.generate(batch.input_features, **kwargs), npu.generate(batch.input_features, **kwargs)
    assert torch.equal(got["sequences"], want["sequences"])
    assert torch.equal(got["token_timestamps"], want["token_timestamps"])
    assert got["token_timestamps"].max() > 0.2 and len(set(got["token_timestamps"][0].tolist())) > 2


@pytest.mark.slow
def test_asr_pipeline_word_timestamps_match_eager(timestamped):
    npu, eager, _ = timestamped
    audio = np.concatenate([_audio(1.2, 440, 3), _audio(1.3, 660, 4)])      # 2.5 s: three 1-s chunks with stride
    runs = [pipeline("automatic-speech-recognition", model=model, tokenizer=build_whisper_tokenizer(),
                     feature_extractor=build_feature_extractor())(
        {"raw": audio.copy(), "sampling_rate": SAMPLING_RATE}, return_timestamps="word", chunk_length_s=1,
        generate_kwargs={"max_new_tokens": 8, "language": "en", "num_beams": 1}) for model in (eager, npu)]
    assert runs[0] == runs[1] and runs[1]["chunks"] and runs[1]["chunks"][-1]["timestamp"][1] > 1.0


def test_token_timestamps_refusals(timestamped, whisper, tmp_path):
    npu, eager, artifact = timestamped
    features = _features(CLIPS[:1])
    plain, _, _ = whisper                                  # the session Whisper, compiled without the knob
    with pytest.raises(ValueError, match=r"alignment_heads=\[\].*npu_config=\{'token_timestamps': True\}"):
        plain.generate(features, return_token_timestamps=True)
    other = GenerationConfig.from_dict({**npu.generation_config.to_dict(), "alignment_heads": [[0, 3]]})
    with pytest.raises(ValueError, match=r"heads \[\(0, 3\)\].*alignment_heads=\[\[1, 0\], \[1, 2\]\]"):
        npu.generate(features, generation_config=other, return_token_timestamps=True)
    with pytest.raises(NPUConfigError, match="token_timestamps='yes'"):
        NPUModelForSpeechSeq2Seq.from_model(eager, {**CONFIG, "token_timestamps": "yes"}, compile_cache=False)
    with pytest.raises(ValueError, match="output_attentions"):   # outside a token-timestamps call
        npu.get_encoder()(features, output_attentions=True)
    # a re-signed artifact claiming no alignment heads while its decoder graphs return them
    copy = tmp_path / "copy"
    shutil.copytree(artifact, copy)
    config = json.loads((copy / "npu_config.json").read_text())
    config["alignment_heads"] = []
    (copy / "npu_config.json").write_text(json.dumps(config))
    resign(copy)
    with pytest.raises(NPUConfigError, match="outputs"):
        NPUModelForSpeechSeq2Seq.from_pretrained(copy)
