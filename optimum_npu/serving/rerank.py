"""``/v1/rerank`` for a compiled sequence-classification encoder (a cross-encoder reranker).

The request and response follow the shape rerank services share (Cohere, Jina, vLLM's ``/v1/rerank``):
``{"model", "query", "documents": [...], "top_n"?, "return_documents"?}`` ->
``{"results": [{"index", "relevance_score", "document": {"text"}}...], "usage"}``, best first. Each
(query, document) pair is tokenized as a text pair and runs through the compiled length/batch buckets (a
batch larger than the largest bucket is split). The relevance score is the head's probability of
relevance: ``sigmoid(logit)`` for a one-label head (MS MARCO cross-encoders), the softmax probability of
the last label for a multi-label head.
"""

from __future__ import annotations

import uuid

import torch
from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from optimum_npu.serving.api_server import parse_body
from optimum_npu.serving.encoder_engine import EncoderEngine, check_model, encoder_app
from optimum_npu.serving.errors import APIError

#: Most documents one request may rank.
MAX_DOCUMENTS = 1024


class RerankRequest(BaseModel):
    """A rerank request: one query, the documents to score against it."""

    model_config = ConfigDict(extra="ignore")

    model: str
    query: str
    documents: list[str]
    top_n: int | None = None
    return_documents: bool = True


def relevance(logits: torch.Tensor) -> torch.Tensor:
    """[n, labels] -> [n] scores in [0, 1]: sigmoid of a single logit, else the last label's probability."""
    logits = logits.float()
    return torch.sigmoid(logits[:, 0]) if logits.shape[1] == 1 else torch.softmax(logits, -1)[:, -1]


class RerankEngine(EncoderEngine):
    """The cross-encoder behind the endpoint: tokenizes the pairs, runs the buckets under one lock, scores."""

    task = "sequence-classification"
    hint = ("serve an encoder compiled for sequence classification (NPUModelForSequenceClassification) for "
            "/v1/rerank, for feature extraction for /v1/embeddings, or a decoder artifact")

    def score(self, query: str, documents: list[str]) -> tuple[torch.Tensor, int, float]:
        """The relevance of each document, the tokens scored and the simulated NPU seconds they took."""
        batch = self.tokenizer([query] * len(documents), documents, padding=True, return_tensors="pt")
        with self.lock:
            before = self.model.npu_stats.seconds
            try:
                logits = self.model(**batch).logits
            except ValueError as err:  # longer than the largest bucket: the model says which bucket to add
                raise APIError(400, str(err), param="documents") from None
            seconds = self.model.npu_stats.seconds - before
        return relevance(logits), int(batch["attention_mask"].sum()), seconds


def build_rerank_app(engine: RerankEngine, model_name: str, api_key: str | None = None) -> FastAPI:
    """The FastAPI app serving ``/v1/rerank``, ``/v1/models`` and ``/health`` for ``engine``."""
    app = encoder_app(engine, model_name, api_key, "optimum-npu rerank")

    @app.post("/v1/rerank")
    async def rerank(request: Request):
        body = await parse_body(request, RerankRequest)
        check_model(body.model, model_name)
        if not 1 <= len(body.documents) <= MAX_DOCUMENTS:
            raise APIError(400, f"'documents' must hold 1 to {MAX_DOCUMENTS} texts, got {len(body.documents)}",
                           param="documents")
        if body.top_n is not None and body.top_n < 1:
            raise APIError(400, f"top_n={body.top_n}: give at least 1 (or leave it out for every document)",
                           param="top_n")
        scores, tokens, seconds = await run_in_threadpool(engine.score, body.query, body.documents)
        order = sorted(range(len(body.documents)), key=lambda i: -float(scores[i]))[:body.top_n]
        results = [{"index": i, "relevance_score": float(scores[i]),
                    **({"document": {"text": body.documents[i]}} if body.return_documents else {})} for i in order]
        return {"id": f"rerank-{uuid.uuid4().hex}", "model": model_name, "results": results,
                "usage": {"total_tokens": tokens}, "npu": {"simulated_s": seconds}}

    return app
