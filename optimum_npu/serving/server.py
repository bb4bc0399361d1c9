"""Running the server: load the model, start the engine thread, serve with uvicorn, shut down cleanly.

On SIGINT/SIGTERM uvicorn stops accepting connections; the engine stops taking requests (503), lets the
running ones finish for up to the grace period, then ends the rest with an error; the port is released.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from transformers import GenerationMixin

from optimum_npu.serving.api_server import build_app
from optimum_npu.serving.async_engine import AsyncEngine
from optimum_npu.serving.embeddings import EmbeddingEngine, build_embeddings_app
from optimum_npu.serving.engine_core import EngineCore
from optimum_npu.serving.loading import load_for_serving
from optimum_npu.serving.transcriptions import TranscriptionEngine, build_transcriptions_app  # speech-to-text
from optimum_npu.serving.rerank import RerankEngine, build_rerank_app

logger = logging.getLogger(__name__)
#: The endpoint of each encoder task: its engine and app builder (an encoder artifact of another task is refused).
ENCODER_ENDPOINTS = {"feature-extraction": (EmbeddingEngine, build_embeddings_app),
                     "sequence-classification": (RerankEngine, build_rerank_app)}


@dataclass(frozen=True)
class ServerOptions:
    """What ``optimum-npu serve`` takes besides the model (see ``add_serving_commands`` for each)."""

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    served_model_name: str | None = None
    chat_template: str | None = None
    tokenizer: str | None = None
    device: int | None = None
    num_kv_blocks: int | None = None
    max_num_batched_tokens: int | None = None
    enable_prefix_caching: bool = True
    profile_dir: Path = Path("npu_profiles")
    grace_period_s: float = 10.0
    log_level: str = "info"


class _DrainingServer(uvicorn.Server):
    """A uvicorn server that tells the engine to refuse new requests as soon as a shutdown signal arrives
    (and then exits normally, status 0)."""

    def __init__(self, config: uvicorn.Config, engine: AsyncEngine):
        super().__init__(config)
        self.engine = engine

    def handle_exit(self, sig, frame) -> None:
        self.engine.draining = True
        super().handle_exit(sig, frame)
        # uvicorn re-raises the signal once it has stopped, which would kill the process before the engine
        # shuts down and the model is released: the shutdown it asked for is done by ``NPUServer.run`` instead.
        self._captured_signals.clear()


class NPUServer:
    """A loaded model served over HTTP.

    Args:
        model: a compiled artifact directory or Hub repo id.
        options: the server options.
    """

    def __init__(self, model: str | Path, options: ServerOptions = ServerOptions()):
        self.options = options
        self.model, tokenizer = load_for_serving(model, device=options.device, tokenizer=options.tokenizer)
        name = options.served_model_name or str(model)
        try:
            self.engine, self.app = self._engine_and_app(tokenizer, name)
        except ValueError:
            self.model.release()
            raise
        config = uvicorn.Config(self.app, host=options.host, port=options.port, log_level=options.log_level,
                                timeout_graceful_shutdown=options.grace_period_s, lifespan="off")
        self.server = _DrainingServer(config, self.engine)
        self._thread: threading.Thread | None = None

    def _engine_and_app(self, tokenizer, name: str):
        """A text generator gets the scheduler's engine thread and the OpenAI app; an encoder, /v1/embeddings
        (feature extraction) or /v1/rerank (sequence classification); a speech-to-text model,
        /v1/audio/transcriptions."""
        options = self.options
        if getattr(self.model, "main_input_name", None) == "input_features":   # speech-to-text (Whisper)
            engine = TranscriptionEngine(self.model, tokenizer)
            return engine, build_transcriptions_app(engine, name, options.api_key)
        if not isinstance(self.model, GenerationMixin):
            engine_class, build = ENCODER_ENDPOINTS.get(getattr(self.model, "npu_task", None),
                                                        ENCODER_ENDPOINTS["feature-extraction"])
            engine = engine_class(self.model, tokenizer)   # another task is refused, naming what to serve
            return engine, build(engine, name, options.api_key)
        core = EngineCore(self.model, tokenizer, options.num_kv_blocks, options.max_num_batched_tokens,
                          options.enable_prefix_caching)
        engine = AsyncEngine(core).start()
        return engine, build_app(engine, name, options.api_key, options.chat_template, options.profile_dir)

    def run(self) -> None:
        """Serves until SIGINT/SIGTERM (or ``stop()``), then shuts the engine down and frees the model."""
        try:
            self.server.run()
        finally:
            self.close()

    @property
    def url(self) -> str:
        return f"http://{self.options.host}:{self.options.port}"

    def start_background(self, timeout_s: float = 60.0) -> threading.Thread:
        """Serves on a background thread (tests, examples, benchmarks); returns once the port listens."""
        thread = threading.Thread(target=self.run, name="optimum-npu-server", daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start listening on {self.url}")
            time.sleep(0.02)
        self._thread = thread
        return thread

    def stop(self) -> None:
        """Shuts the server down from another thread (and waits for a background server to end)."""
        self.engine.draining = True
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=self.options.grace_period_s + 30)

    def close(self) -> None:
        self.engine.shutdown(self.options.grace_period_s)
        self.model.release()
