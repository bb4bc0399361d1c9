"""``/v1/audio/transcriptions`` for a compiled Whisper (``optimum-npu serve`` on a speech-to-text artifact).

The request is OpenAI's multipart form: ``file`` (a WAV: PCM 8/16/32-bit, mono or multi-channel, any rate,
resampled to the feature extractor's), ``model``, optional ``language``, ``prompt`` (refused), ``temperature``
and ``response_format`` (``json``, ``text`` or ``verbose_json`` with timestamped segments). Audio longer than
the model's window is transcribed in windows (the ASR pipeline's ``chunk_length_s``). One lock serialises the
model; the WAV is parsed as untrusted data (size bounded, header checked) before any compute.
"""

from __future__ import annotations

import io
import threading
import wave

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool
from transformers import AutoFeatureExtractor, pipeline

from optimum_npu.serving.api_server import MAX_BODY_BYTES, install_common
from optimum_npu.serving.errors import APIError

RESPONSE_FORMATS = ("json", "text", "verbose_json")
#: Longest audio one request may carry (seconds).
MAX_AUDIO_S = 600


def read_wav(data: bytes, sampling_rate: int) -> np.ndarray:
    """A WAV file's samples as float32 mono at ``sampling_rate`` (linear resampling); APIError 400 when it is not
    a PCM WAV or is too long."""
    try:
        with wave.open(io.BytesIO(data)) as wav:
            channels, width, rate, frames = (wav.getnchannels(), wav.getsampwidth(), wav.getframerate(),
                                             wav.getnframes())
            if width not in (1, 2, 4) or not 1 <= channels <= 8 or not 1000 <= rate <= 192000:
                raise APIError(400, f"the WAV has {width}-byte samples, {channels} channels at {rate} Hz; send "
                                    "8/16/32-bit PCM, 1-8 channels, 1-192 kHz", param="file")
            if frames / rate > MAX_AUDIO_S:
                raise APIError(400, f"the audio lasts {frames / rate:.0f} s, more than {MAX_AUDIO_S} s", param="file")
            raw = wav.readframes(frames)
    except (wave.Error, EOFError) as err:
        raise APIError(400, f"'file' is not a PCM WAV file ({err}); send a .wav (other formats are not decoded)",
                       param="file") from None
    dtype = {1: np.uint8, 2: np.int16, 4: np.int32}[width]
    samples = np.frombuffer(raw[:len(raw) // (width * channels) * width * channels], dtype=dtype).astype(np.float32)
    samples = (samples - 128.0) / 128.0 if width == 1 else samples / float(np.iinfo(dtype).max)
    samples = samples.reshape(-1, channels).mean(axis=1)
    if rate != sampling_rate and samples.size:
        positions = np.arange(int(samples.size * sampling_rate / rate)) * (rate / sampling_rate)
        samples = np.interp(positions, np.arange(samples.size), samples).astype(np.float32)
    if not samples.size:
        raise APIError(400, "the WAV holds no samples", param="file")
    return samples


class TranscriptionEngine:
    """Whisper behind the endpoint: the ASR pipeline on the compiled model, under one lock."""

    def __init__(self, model, tokenizer):
        if getattr(model, "main_input_name", None) != "input_features":
            raise ValueError(f"{type(model).__name__} does not take audio; serve a speech-to-text artifact "
                             "(NPUModelForSpeechSeq2Seq)")
        extractor = AutoFeatureExtractor.from_pretrained(model.artifact_dir)
        self.model, self.sampling_rate = model, int(extractor.sampling_rate)
        self.window_s = extractor.chunk_length
        self.pipe = pipeline("automatic-speech-recognition", model=model, tokenizer=tokenizer,
                             feature_extractor=extractor)
        self.lock = threading.Lock()
        self.draining, self.alive = False, True

    def transcribe(self, audio: np.ndarray, language: str | None, timestamps: bool, temperature: float) -> dict:
        generate = {"num_beams": 1, **({"language": language} if language else {})}   # greedy, as OpenAI's
        limit = self.model.npu_config.max_seq_len - 4          # the start, language, task and timestamp tokens
        if (self.model.generation_config.max_length or 0) > limit:
            generate["max_new_tokens"] = limit
        if temperature > 0:
            generate.update(do_sample=True, temperature=temperature)
        options = {"chunk_length_s": self.window_s} if audio.size > self.window_s * self.sampling_rate else {}
        with self.lock:
            try:
                return self.pipe({"raw": audio, "sampling_rate": self.sampling_rate}, generate_kwargs=generate,
                                 return_timestamps=timestamps or None, **options)
            except ValueError as err:  # an unknown language, a request beyond the compiled envelope
                raise APIError(400, str(err)[:500]) from None

    def shutdown(self, grace_period_s: float) -> None:
        self.draining = True
        if self.lock.acquire(timeout=grace_period_s):
            self.lock.release()
        self.alive = False


def _segments(result: dict) -> list[dict]:
    return [{"id": i, "start": chunk["timestamp"][0], "end": chunk["timestamp"][1], "text": chunk["text"]}
            for i, chunk in enumerate(result.get("chunks") or [])]


def build_transcriptions_app(engine: TranscriptionEngine, model_name: str, api_key: str | None = None) -> FastAPI:
    """The FastAPI app serving ``/v1/audio/transcriptions``, ``/v1/models`` and ``/health`` for ``engine``."""
    app = FastAPI(title="optimum-npu transcriptions", docs_url=None, redoc_url=None, openapi_url=None)
    install_common(app, engine, api_key)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0,
                                             "owned_by": "optimum-npu", "root": str(engine.model.artifact_dir)}]}

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request):
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > 4 * MAX_BODY_BYTES:
            raise APIError(413, f"the request body has {declared} bytes, more than {4 * MAX_BODY_BYTES}")
        form = await request.form()
        upload, fields = form.get("file"), {k: form.get(k) for k in ("model", "language", "response_format",
                                                                    "temperature", "prompt")}
        if upload is None or isinstance(upload, str):
            raise APIError(400, "'file' is required: upload the audio as a multipart file", param="file")
        if fields["model"] != model_name:
            raise APIError(404, f"The model `{str(fields['model'])[:100]}` does not exist; this server serves "
                                f"`{model_name}`", param="model", code="model_not_found")
        response_format = fields["response_format"] or "json"
        if response_format not in RESPONSE_FORMATS:
            raise APIError(400, f"response_format={response_format[:40]!r} is not one of {list(RESPONSE_FORMATS)}",
                           param="response_format")
        if fields["prompt"]:
            raise APIError(400, "'prompt' is not supported by this server; leave it out", param="prompt")
        try:
            temperature = float(fields["temperature"] or 0.0)
        except ValueError:
            raise APIError(400, "temperature must be a number", param="temperature") from None
        audio = read_wav(await upload.read(4 * MAX_BODY_BYTES + 1), engine.sampling_rate)
        result = await run_in_threadpool(engine.transcribe, audio, fields["language"],
                                         response_format == "verbose_json", temperature)
        text = result["text"]
        if response_format == "text":
            return PlainTextResponse(text)
        if response_format == "json":
            return {"text": text}
        return {"task": "transcribe", "language": fields["language"] or "", "text": text,
                "duration": audio.size / engine.sampling_rate, "segments": _segments(result),
                "npu": {"simulated_s": engine.model.npu_stats.total_s}}

    return app
