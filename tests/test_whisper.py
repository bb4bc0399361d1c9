"""Whisper on the NPU against eager Transformers: Whisper's generate() (forced language/task tokens, timestamps,
beam search, batch 1 and a padded batch of 3), logits, the ASR pipeline with chunked long-form audio, the artifact
round trip and the auto class."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import pipeline

from optimum_npu.models.auto import NPUAutoModel
from optimum_npu.models.seq2seq.speech import NPUModelForSpeechSeq2Seq
from optimum_npu.models.seq2seq.tiny_whisper import SAMPLING_RATE, build_feature_extractor, build_whisper_tokenizer

def _audio(seconds: float, freq: float, seed: int) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLING_RATE)) / SAMPLING_RATE
    noise = np.random.RandomState(seed).randn(t.size) * 0.05
    return (0.5 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


CLIPS = [_audio(0.9, 440, 0), _audio(0.5, 300, 1), _audio(0.7, 880, 2)]


def _features(clips):
    return build_feature_extractor()(clips, sampling_rate=SAMPLING_RATE, return_tensors="pt").input_features


CASES = [(rows, options) for options in (dict(language="de", task="transcribe"),
                                        dict(language="en", task="translate", num_beams=2),
                                        dict(language="fr", return_timestamps=True)) for rows in (1, 3)]


@pytest.mark.parametrize("rows, options", [
    pytest.param(rows, options, id=f"{'-'.join(map(str, options.values()))}-{rows}",
                 marks=pytest.mark.slow if (rows == 3) == ("return_timestamps" in options) else ())
    for rows, options in CASES])
def test_generate_matches_eager(whisper, rows, options):
    npu, eager, _ = whisper
    features = _features(CLIPS[:rows])
    kwargs = dict(max_new_tokens=10, return_dict_in_generate=True, output_logits=True, **options)
    want, got = eager.generate(features, **kwargs), npu.generate(features, **kwargs)
    assert torch.equal(got["sequences"], want["sequences"])
    if "logits" in want:                        # with return_timestamps the logits are per segment instead
        worst = max((a - b).abs().max().item() for a, b in zip(got["logits"], want["logits"]))
        assert worst < 1e-4
        assert npu.npu_stats.encoder.buckets_used == {f"encoder_b{1 if rows == 1 else 4}_s100": 1}
    assert len(set(got["sequences"].flatten().tolist())) > 3


def test_forced_language_and_task_tokens(whisper):
    npu, _, _ = whisper
    tokenizer = build_whisper_tokenizer()
    out = npu.generate(_features(CLIPS[:1]), language="de", task="translate", max_new_tokens=3,
                       return_dict_in_generate=True)
    prompt = npu.npu_stats.decoder.steps[0]
    assert prompt.phase == "prefill" and prompt.tokens == 4        # SOT, language, task, no-timestamps in one chunk
    wanted = tokenizer.convert_tokens_to_ids(["<|de|>", "<|translate|>"])
    assert out["sequences"].shape[1] >= 3 and npu.generation_config.lang_to_id["<|de|>"] == wanted[0]


@pytest.mark.parametrize("options", [pytest.param(dict(chunk_length_s=1, batch_size=2), id="chunked"),
                                     pytest.param(dict(), id="one-window", marks=pytest.mark.slow),
                                     pytest.param(dict(chunk_length_s=1, return_timestamps=True), id="chunk-timestamps",
                                                  marks=pytest.mark.slow)])
def test_asr_pipeline_long_form_matches_eager(whisper, options):
    npu, eager, _ = whisper
    tokenizer, extractor = build_whisper_tokenizer(), build_feature_extractor()
    audio = np.concatenate([_audio(1.2, 440, 3), _audio(1.3, 660, 4)])      # 2.5 s: three 1-s chunks with stride
    generate = {"max_new_tokens": 8, "language": "en", "num_beams": 2}
    runs = [pipeline("automatic-speech-recognition", model=model, tokenizer=tokenizer, feature_extractor=extractor)(
        {"raw": audio.copy(), "sampling_rate": SAMPLING_RATE}, generate_kwargs=generate, **options)
        for model in (eager, npu)]
    assert runs[0] == runs[1] and runs[1]["text"]


def test_auto_class_and_refusals(whisper):
    npu, _, artifact = whisper
    auto = NPUAutoModel.from_pretrained(artifact)
    try:
        assert type(auto) is NPUModelForSpeechSeq2Seq
    finally:
        auto.release()
    with pytest.raises(ValueError, match=r"return_token_timestamps.*'token_timestamps': True"):   # compiled without
        npu.generate(_features(CLIPS[:1]), return_token_timestamps=True)
    with pytest.raises(ValueError, match=r"input_features must be \[batch, 16, 100\]"):
        npu.get_encoder()(torch.zeros(1, 16, 80))
