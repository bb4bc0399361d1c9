"""The OpenAI-compatible HTTP server of one compiled model (FastAPI): routes, API key, errors, metrics, profiling.

Every endpoint but ``/health`` needs ``Authorization: Bearer <key>`` when an API key is set. Errors are
OpenAI error bodies: 400 invalid parameter (named), 401 bad key, 404 unknown model or route, 400 too long
for ``max_seq_len`` (with the numbers), 422 body that is not JSON, 503 while shutting down.
"""

from __future__ import annotations

import hmac
import json
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from optimum_npu.device.profiler import Profiler
from optimum_npu.serving.async_engine import AsyncEngine
from optimum_npu.serving.errors import APIError, server_error
from optimum_npu.serving.metrics import ServingMetrics
from optimum_npu.serving.openai_routes import OpenAIHandlers
from optimum_npu.serving.protocol import (ChatCompletionRequest, CompletionRequest, DetokenizeRequest,
                                          TokenizeRequest)

#: Largest request body read (bytes); a bigger one is refused with 413 before it is parsed.
MAX_BODY_BYTES = 8 * 1024 * 1024


async def parse_body(request: Request, model: type[BaseModel]):
    """The request's JSON body as ``model``: 422 when it is not JSON, 400 naming the first invalid field."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:      # refused before it is read
        raise APIError(413, f"the request body has {declared} bytes, more than {MAX_BODY_BYTES}")
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise APIError(413, f"the request body has {len(body)} bytes, more than {MAX_BODY_BYTES}")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise APIError(422, f"the request body is not valid JSON: {err}", code="invalid_json") from None
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise APIError(400, f"{param or 'body'}: {first['msg']}", param=param) from None


def install_common(app: FastAPI, engine, api_key: str | None) -> None:
    """What every server app shares: the Bearer-key and shutdown guard, OpenAI error bodies for every failure,
    and ``/health``. ``engine`` tells whether it is draining (``draining``) or running (``alive``)."""

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if request.url.path != "/health":
            if api_key is not None:
                header = request.headers.get("authorization", "")
                given = header[7:] if header.lower().startswith("bearer ") else ""
                if not hmac.compare_digest(given.encode(), api_key.encode()):
                    return APIError(401, "invalid or missing API key: send 'Authorization: Bearer <key>'",
                                    code="invalid_api_key").response()
            if engine.draining or not engine.alive:
                return APIError(503, "the server is shutting down", code="service_unavailable").response()
        try:
            return await call_next(request)
        except APIError as err:
            return err.response()

    @app.exception_handler(APIError)
    async def api_error(_, err: APIError):
        return err.response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException):
        message = f"no route {request.method} {request.url.path}" if err.status_code in (404, 405) else err.detail
        return APIError(err.status_code, str(message)).response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(_, err: RequestValidationError):
        return APIError(400, str(err.errors()[0].get("msg"))).response()

    @app.exception_handler(Exception)
    async def unexpected(_, err: Exception):
        return server_error(err).response()

    @app.get("/health")
    async def health():
        if not engine.alive:
            return APIError(503, "the engine thread is not running", code="service_unavailable").response()
        return Response(status_code=200)


def build_app(engine: AsyncEngine, model_name: str, api_key: str | None = None, chat_template: str | None = None,
              profile_dir: Path = Path("npu_profiles")) -> FastAPI:
    """The FastAPI app serving ``engine`` under ``model_name`` (the engine thread must be started).

    Args:
        engine: the running engine thread.
        model_name: the name of the model in ``/v1/models`` and in requests.
        api_key: the Bearer key every endpoint but ``/health`` requires (None: open).
        chat_template: a Jinja chat template overriding the tokenizer's.
        profile_dir: where ``/stop_profile`` writes its Perfetto traces.
    """
    app = FastAPI(title="optimum-npu", docs_url=None, redoc_url=None, openapi_url=None)
    handlers = OpenAIHandlers(engine, model_name, chat_template)
    metrics = ServingMetrics(engine.core, model_name)
    app.state.engine, app.state.metrics = engine, metrics
    core = engine.core

    install_common(app, engine, api_key)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0,
                                             "owned_by": "optimum-npu", "root": str(core.model.artifact_dir),
                                             "max_model_len": core.max_seq_len}]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await handlers.completions(await parse_body(request, CompletionRequest))

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await handlers.chat(await parse_body(request, ChatCompletionRequest))

    @app.post("/tokenize")
    async def tokenize(request: Request):
        body = await parse_body(request, TokenizeRequest)
        handlers.check_model(body.model)
        if body.messages is not None:
            if not chat_template and not core.tokenizer.has_chat_template:
                raise APIError(400, "this model's tokenizer has no chat template; start the server with "
                                    "--chat-template FILE or tokenize a 'prompt'", param="messages")
            text = core.tokenizer.chat_prompt([{"role": m.role, "content": m.text(i)}
                                               for i, m in enumerate(body.messages)], chat_template)
            tokens = core.tokenizer.encode_chat(text)
        elif body.prompt is not None:
            tokens = core.tokenizer.encode(body.prompt)
        else:
            raise APIError(400, "give 'prompt' (text) or 'messages' (a conversation)", param="prompt")
        return {"tokens": tokens, "count": len(tokens), "max_model_len": core.max_seq_len}

    @app.post("/detokenize")
    async def detokenize(request: Request):
        body = await parse_body(request, DetokenizeRequest)
        handlers.check_model(body.model)
        bad = next((t for t in body.tokens if not 0 <= t < core.vocab_size), None)
        if bad is not None:
            raise APIError(400, f"token id {bad} is not in [0, {core.vocab_size - 1}]", param="tokens")
        return {"prompt": core.tokenizer.decode(body.tokens, skip_special_tokens=False)}

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/start_profile")
    async def start_profile():
        def start(core):
            core.model._runtime.engine.profiler = Profiler()
        await engine.call(start)
        return {"status": "profiling"}

    @app.post("/stop_profile")
    async def stop_profile():
        def stop(core):
            runtime_engine = core.model._runtime.engine
            profiler, runtime_engine.profiler = runtime_engine.profiler, core.model._runtime.profiler
            if profiler is None:
                raise APIError(400, "no profile is running; POST /start_profile first")
            profile_dir.mkdir(parents=True, exist_ok=True)
            path = profile_dir / f"npu_trace_{len(list(profile_dir.glob('npu_trace_*.json')))}.json"
            profiler.save(path)
            return {"status": "stopped", "trace": str(path.resolve()), "graph_calls": len(profiler.calls)}
        return await engine.call(stop)

    return app
