"""``optimum-npu serve`` on a Whisper artifact: ``/v1/audio/transcriptions`` through the official ``openai`` client,
on a WAV synthesised here, against the eager model's ASR pipeline."""

from __future__ import annotations

import io
import wave

import numpy as np
import openai
import pytest
from serving_fixtures import ServerThread
from transformers import pipeline

from optimum_npu.models.seq2seq.tiny_whisper import SAMPLING_RATE, build_feature_extractor, build_whisper_tokenizer

KEY = "asr-key"


def _wav(seconds: float, rate: int = SAMPLING_RATE) -> tuple[bytes, np.ndarray]:
    """A 16-bit mono WAV of two tones and the float samples it holds."""
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.4 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1250 * t)
    pcm = (tone * 32767).astype(np.int16)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.tobytes())
    return buffer.getvalue(), pcm.astype(np.float32) / 32767


@pytest.fixture(scope="module")
def asr_server(whisper):
    _, _, artifact = whisper
    with ServerThread(artifact, served_model_name="tiny-whisper", api_key=KEY) as running:
        yield running


def test_transcriptions_match_eager_through_the_openai_client(asr_server, whisper):
    _, eager, _ = whisper
    data, samples = _wav(0.8)
    want = pipeline("automatic-speech-recognition", model=eager, tokenizer=build_whisper_tokenizer(),
                    feature_extractor=build_feature_extractor())(
        {"raw": samples, "sampling_rate": SAMPLING_RATE}, generate_kwargs={"language": "en", "num_beams": 1})
    client = openai.OpenAI(base_url=f"{asr_server.url}/v1", api_key=KEY, max_retries=0)
    got = client.audio.transcriptions.create(model="tiny-whisper", file=("speech.wav", data, "audio/wav"),
                                             language="en")
    assert got.text == want["text"] and got.text
    text = client.audio.transcriptions.create(model="tiny-whisper", file=("speech.wav", data, "audio/wav"),
                                              language="en", response_format="text")
    assert text == want["text"]
    verbose = client.audio.transcriptions.create(model="tiny-whisper", file=("speech.wav", data, "audio/wav"),
                                                 language="en", response_format="verbose_json")
    assert verbose.duration == pytest.approx(0.8) and verbose.segments and verbose.segments[0].end is not None


def test_bad_uploads_get_openai_errors(asr_server):
    client = openai.OpenAI(base_url=f"{asr_server.url}/v1", api_key=KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError, match="not a PCM WAV"):
        client.audio.transcriptions.create(model="tiny-whisper", file=("a.wav", b"RIFFjunk", "audio/wav"))
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.audio.transcriptions.create(model="other", file=("a.wav", _wav(0.2)[0], "audio/wav"))
    with pytest.raises(openai.BadRequestError, match="response_format"):
        client.audio.transcriptions.create(model="tiny-whisper", file=("a.wav", _wav(0.2)[0], "audio/wav"),
                                           response_format="srt")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{asr_server.url}/v1", api_key="wrong", max_retries=0).audio.transcriptions.create(
            model="tiny-whisper", file=("a.wav", _wav(0.2)[0], "audio/wav"))
