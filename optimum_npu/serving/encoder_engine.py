"""What the encoder endpoints share (``/v1/embeddings``, ``/v1/rerank``): the model behind one lock, the
shutdown protocol of the server's guard, the served-model check and ``/v1/models``."""

from __future__ import annotations

import threading

from fastapi import FastAPI

from optimum_npu.serving.api_server import install_common
from optimum_npu.serving.errors import APIError


class EncoderEngine:
    """An encoder model and its tokenizer behind one lock (requests run one after another).

    It answers ``draining`` / ``alive`` / ``shutdown`` as the generation engine does, for the shared guard.
    ``task`` is the compiled task the endpoint needs; another is refused with ``hint``.
    """

    task = ""
    hint = ""

    def __init__(self, model, tokenizer):
        if getattr(model, "npu_task", None) != self.task:
            raise ValueError(f"{type(model).__name__} computes {getattr(model, 'npu_task', 'text')}, not "
                             f"{self.task}: {self.hint}")
        self.model, self.tokenizer = model, tokenizer
        self.lock = threading.Lock()
        self.draining, self.alive = False, True

    def shutdown(self, grace_period_s: float) -> None:
        self.draining = True
        if self.lock.acquire(timeout=grace_period_s):  # let the request in progress finish
            self.lock.release()
        self.alive = False


def check_model(requested: str, model_name: str) -> None:
    """404 when a request names another model than the served one."""
    if requested != model_name:
        raise APIError(404, f"The model `{requested[:100]}` does not exist; this server serves `{model_name}`",
                       param="model", code="model_not_found")


def encoder_app(engine: EncoderEngine, model_name: str, api_key: str | None, title: str) -> FastAPI:
    """A FastAPI app with the common guard, ``/health`` and ``/v1/models`` for ``engine``."""
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    install_common(app, engine, api_key)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0,
                                             "owned_by": "optimum-npu", "root": str(engine.model.artifact_dir)}]}

    return app
