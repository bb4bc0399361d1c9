"""Wav2Vec2 CTC: parity with eager Transformers per (batch x max_samples) bucket, padding, the
automatic-speech-recognition pipeline, refusals and the artifact."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers
from transformers import AutoProcessor, Wav2Vec2Config, Wav2Vec2ForCTC, pipeline

from optimum_npu import NPUAutoModel, NPUModelForCTC
from optimum_npu.models.encoder.runtime import EncoderInputError
from optimum_npu.models.encoder.tiny_audio import CONFIG, build_ctc, save_ctc
from optimum_npu.models.encoder.wav2vec2 import UnsupportedAudioModel
from vision_fixtures import compile_save_reload

KNOBS = {"max_samples": [1600, 4800], "batch_sizes": [1, 2]}


@pytest.fixture(scope="module")
def ctc(tmp_path_factory):
    """(reloaded NPU model, eager model, artifact dir), compiled once for this module."""
    root = tmp_path_factory.mktemp("ctc")
    checkpoint = save_ctc(root / "hf")
    model = compile_save_reload(NPUModelForCTC, checkpoint, KNOBS, root / "npu")
    yield model, Wav2Vec2ForCTC.from_pretrained(checkpoint).eval(), root / "npu"
    model.release()


def audio(rows: int, samples: int, seed: int) -> dict[str, torch.Tensor]:
    """Random waveforms; every other row is shorter (zeros and mask 0 after its half)."""
    values = torch.randn(rows, samples, generator=torch.Generator().manual_seed(seed))
    mask = torch.ones(rows, samples, dtype=torch.long)
    for row in range(1, rows, 2):
        values[row, samples // 2:], mask[row, samples // 2:] = 0.0, 0
    return {"input_values": values, "attention_mask": mask}


def test_logits_equal_eager_on_several_buckets(ctc):
    npu, eager, _ = ctc
    npu.npu_stats.reset()
    for rows, samples, buckets in ((1, 1000, ["audio_b1_n1600"]), (2, 1600, ["audio_b2_n1600"]),
                                   (2, 4000, ["audio_b2_n4800"]), (3, 3000, ["audio_b2_n4800", "audio_b1_n4800"])):
        batch = audio(rows, samples, seed=rows + samples)
        with torch.no_grad():
            expected = eager(**batch).logits
        calls = len(npu.npu_stats.calls)
        found = npu(**batch).logits
        assert found.shape == expected.shape   # the frames of the unpadded audio
        torch.testing.assert_close(found, expected, atol=1e-4, rtol=0)
        assert [c.bucket.name for c in npu.npu_stats.calls[calls:]] == buckets


def test_padding_to_a_larger_bucket_does_not_change_the_logits(ctc):
    npu, _, _ = ctc
    alone = audio(1, 1200, seed=5)
    padded = {name: torch.cat([t, torch.zeros(1, 3000, dtype=t.dtype)], 1) for name, t in alone.items()}
    short, long = npu(**alone).logits, npu(**padded).logits
    assert [c.bucket.tokens for c in npu.npu_stats.calls[-2:]] == [1600, 4800]
    torch.testing.assert_close(long[:, :short.shape[1]], short, atol=1e-5, rtol=0)


def test_speech_recognition_pipeline_equals_eager(ctc):
    npu, eager, root = ctc
    processor = AutoProcessor.from_pretrained(root)
    clips = [np.random.default_rng(seed).standard_normal(1200 + 900 * seed).astype(np.float32) for seed in range(3)]
    options = {"tokenizer": processor.tokenizer, "feature_extractor": processor.feature_extractor}
    found = pipeline("automatic-speech-recognition", model=npu, **options)(clips)
    expected = pipeline("automatic-speech-recognition", model=eager, **options)(clips)
    assert found == expected and any(item["text"] for item in found)


def test_the_loaded_artifact_never_calls_the_hf_forward(ctc, monkeypatch):
    _, _, root = ctc
    for name in ("Wav2Vec2ForCTC", "Wav2Vec2Model", "Wav2Vec2FeatureEncoder", "Wav2Vec2EncoderStableLayerNorm",
                 "Wav2Vec2EncoderLayerStableLayerNorm", "Wav2Vec2Attention"):
        owner = getattr(transformers.models.wav2vec2.modeling_wav2vec2, name)
        monkeypatch.setattr(owner, "forward", lambda *a, _n=name, **k: pytest.fail(f"{_n}.forward called"))
    model = NPUAutoModel.from_pretrained(root)
    try:
        assert type(model) is NPUModelForCTC and model.main_input_name == "input_values"
        assert model(**audio(2, 2000, seed=1)).logits.shape == (2, 6, 30)
        stored = json.loads((root / "npu_config.json").read_text())
        assert stored["max_samples"] == [1600, 4800] and stored["inputs"] == ["input_values", "frame_mask",
                                                                                "frame_bias"]
    finally:
        model.release()


def test_bad_audio_is_refused_before_any_graph_runs(ctc, monkeypatch):
    npu, eager, _ = ctc
    monkeypatch.setattr(npu._runtime.engine, "run", lambda *a, **k: pytest.fail("a graph ran"))
    with pytest.raises(EncoderInputError, match=r"6000 samples but the largest compiled bucket is 4800 .*add a "
                                                r"bucket >= 6000 to max_samples"):
        npu(**audio(1, 6000, seed=0))
    with pytest.raises(EncoderInputError, match=r"holds 100 real samples; the feature encoder needs at least 345"):
        npu(input_values=torch.randn(1, 100))
    with pytest.raises(EncoderInputError, match="finite float tensor"):
        npu(input_values=torch.full((1, 800), float("nan")))
    with pytest.raises(EncoderInputError, match=r"\['pixel_values'\] given to a speech recognition model"):
        npu(input_values=torch.randn(1, 800), pixel_values=torch.zeros(1, 3, 8, 8))


def test_truncation_and_unsupported_configurations(ctc, tmp_path):
    npu, eager, _ = ctc
    batch = audio(1, 6000, seed=2)
    cut = {name: t[:, :4800] for name, t in batch.items()}
    with torch.no_grad():
        torch.testing.assert_close(npu(**batch, truncation=True).logits, eager(**cut).logits, atol=1e-4, rtol=0)
    group_norm = Wav2Vec2ForCTC(Wav2Vec2Config(vocab_size=30, **{**CONFIG, "feat_extract_norm": "group",
                                                                 "do_stable_layer_norm": False}))
    group_norm.config.architectures = ["Wav2Vec2ForCTC"]
    with pytest.raises(UnsupportedAudioModel, match="feat_extract_norm='group': the group-norm feature encoder"):
        NPUModelForCTC.from_model(group_norm, npu_config=KNOBS, compile_cache=False)
    with pytest.raises(ValueError, match=r"max_samples=\[200\] holds 200, below the 345"):
        NPUModelForCTC.from_model(build_ctc(), npu_config={"max_samples": [200]}, compile_cache=False)
