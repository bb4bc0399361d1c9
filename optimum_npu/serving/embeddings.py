"""``/v1/embeddings`` for a compiled feature-extraction encoder (``optimum-npu serve`` on an encoder artifact).

An embedding is the mean of the last hidden state over the input's real tokens, L2-normalised (the
sentence-transformers recipe of models such as all-MiniLM-L6-v2). Inputs are texts or token-id lists, as in
OpenAI's API; each request runs through the compiled length/batch buckets (a batch larger than the largest
bucket is split). One lock serialises the model: requests are answered one after another.
"""

from __future__ import annotations

import base64
from typing import Literal, Union

import numpy as np
import torch
from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from optimum_npu.models.encoder.embeddings import mean_pool
from optimum_npu.serving.api_server import parse_body
from optimum_npu.serving.encoder_engine import EncoderEngine, check_model, encoder_app
from optimum_npu.serving.errors import APIError

#: Most inputs one request may carry.
MAX_INPUTS = 2048


class EmbeddingRequest(BaseModel):
    """OpenAI's embeddings request (``dimensions`` is refused when it asks for another size)."""

    model_config = ConfigDict(extra="ignore")

    model: str
    input: Union[str, list[str], list[int], list[list[int]]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


class EmbeddingEngine(EncoderEngine):
    """The encoder behind the endpoint: tokenizes, runs the buckets under one lock, pools."""

    task = "feature-extraction"
    hint = ("serve an encoder compiled for feature extraction (NPUModelForFeatureExtraction), for sequence "
            "classification (/v1/rerank) or a decoder artifact")

    def token_lists(self, request: EmbeddingRequest) -> list[list[int]]:
        """The request's inputs as token ids (texts tokenized with the special tokens), validated."""
        items = request.input if isinstance(request.input, list) else [request.input]
        if not items or (len(items) > MAX_INPUTS):
            raise APIError(400, f"'input' must hold 1 to {MAX_INPUTS} items, got {len(items)}", param="input")
        if all(isinstance(item, int) for item in items):
            items = [items]
        lists = [self.tokenizer(item)["input_ids"] if isinstance(item, str) else list(item) for item in items]
        vocab = int(self.model.config.vocab_size)
        for index, ids in enumerate(lists):
            if not ids:
                raise APIError(400, f"input[{index}] is empty", param="input")
            bad = next((t for t in ids if not 0 <= t < vocab), None)
            if bad is not None:
                raise APIError(400, f"input[{index}] holds token id {bad}, not in [0, {vocab - 1}]", param="input")
        return lists

    def embed(self, lists: list[list[int]]) -> tuple[torch.Tensor, float]:
        """[len(lists), hidden] normalised embeddings and the simulated NPU seconds they took."""
        batch = self.tokenizer.pad({"input_ids": lists}, return_tensors="pt")
        with self.lock:
            before = self.model.npu_stats.seconds
            try:
                hidden = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            except ValueError as err:  # longer than the largest bucket, bad ids: the model says which
                raise APIError(400, str(err), param="input") from None
            seconds = self.model.npu_stats.seconds - before
        return mean_pool(hidden.last_hidden_state.float(), batch["attention_mask"]), seconds


def _encode(vector: torch.Tensor, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
    return vector.tolist()


def build_embeddings_app(engine: EmbeddingEngine, model_name: str, api_key: str | None = None) -> FastAPI:
    """The FastAPI app serving ``/v1/embeddings``, ``/v1/models`` and ``/health`` for ``engine``."""
    app = encoder_app(engine, model_name, api_key, "optimum-npu embeddings")
    hidden_size = int(engine.model.config.hidden_size)

    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        body = await parse_body(request, EmbeddingRequest)
        check_model(body.model, model_name)
        if body.dimensions not in (None, hidden_size):
            raise APIError(400, f"dimensions={body.dimensions}: this model's embeddings have {hidden_size}",
                           param="dimensions")
        lists = engine.token_lists(body)
        vectors, seconds = await run_in_threadpool(engine.embed, lists)  # the model lock orders the calls
        tokens = sum(len(ids) for ids in lists)
        return {"object": "list", "model": model_name,
                "data": [{"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
                         for i, v in enumerate(vectors)],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                "npu": {"simulated_s": seconds}}

    return app
