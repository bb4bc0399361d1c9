"""``optimum-npu serve`` on a sequence-classification artifact: ``/v1/rerank`` over real HTTP on loopback."""

from __future__ import annotations

import httpx2
import pytest
import torch
from serving_fixtures import ServerThread
from transformers import AutoTokenizer

from optimum_npu.serving.rerank import relevance

KEY = "rerank-key"
QUERY = "where did the cat sit"
DOCUMENTS = ["the cat sat on the mat", "paris is the capital of france", "a big red car on the road",
             "the dog and the cat sat in the house by the river on a cold night"]


@pytest.fixture(scope="module")
def rerank_server(encoders):
    _, _, artifact = encoders["RobertaForSequenceClassification"]
    with ServerThread(artifact, served_model_name="tiny-reranker", api_key=KEY) as running:
        yield running


def post(server, body: dict) -> httpx2.Response:
    return httpx2.post(f"{server.url}/v1/rerank", json=body, headers={"Authorization": f"Bearer {KEY}"})


def test_rerank_scores_equal_eager_best_first(rerank_server, encoders):
    _, eager, artifact = encoders["RobertaForSequenceClassification"]
    tokenizer = AutoTokenizer.from_pretrained(artifact)
    batch = tokenizer([QUERY] * len(DOCUMENTS), DOCUMENTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = relevance(eager(**batch).logits)                  # softmax of the last of 3 labels
    reply = post(rerank_server, {"model": "tiny-reranker", "query": QUERY, "documents": DOCUMENTS})
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    assert [r["index"] for r in results] == sorted(range(4), key=lambda i: -float(expected[i]))
    for item in results:
        assert item["relevance_score"] == pytest.approx(float(expected[item["index"]]), abs=1e-5)
        assert item["document"]["text"] == DOCUMENTS[item["index"]]
    assert reply.json()["usage"]["total_tokens"] == int(batch["attention_mask"].sum())
    top = post(rerank_server, {"model": "tiny-reranker", "query": QUERY, "documents": DOCUMENTS, "top_n": 2,
                               "return_documents": False}).json()["results"]
    assert [r["index"] for r in top] == [r["index"] for r in results[:2]] and "document" not in top[0]


@pytest.mark.parametrize("body, status, words", [
    ({"model": "other", "query": "q", "documents": ["d"]}, 404, "does not exist"),
    ({"model": "tiny-reranker", "query": "q", "documents": []}, 400, "'documents' must hold 1 to"),
    ({"model": "tiny-reranker", "query": "q", "documents": ["d"], "top_n": 0}, 400, "top_n=0"),
    ({"model": "tiny-reranker", "query": "q", "documents": ["word " * 60]}, 400, "bucket"),
    ({"model": "tiny-reranker", "query": "q"}, 400, "documents"),
])
def test_errors_are_openai_bodies(rerank_server, body, status, words):
    reply = post(rerank_server, body)
    assert reply.status_code == status and words in reply.json()["error"]["message"], reply.text
    assert httpx2.post(f"{rerank_server.url}/v1/rerank", json={"model": "tiny-reranker", "query": "q",
                                                               "documents": ["d"]}).status_code == 401


def test_relevance_of_a_one_label_head_is_its_sigmoid():
    logits = torch.tensor([[0.0], [2.0]])
    assert torch.allclose(relevance(logits), torch.sigmoid(logits[:, 0]))
    assert torch.allclose(relevance(torch.tensor([[1.0, 3.0]])), torch.softmax(torch.tensor([1.0, 3.0]), 0)[1:])
