"""``optimum-npu serve`` on an encoder artifact: ``/v1/embeddings`` through the official ``openai`` client."""

from __future__ import annotations

import base64

import httpx2
import numpy as np
import openai
import pytest
import torch
from serving_fixtures import ServerThread

from optimum_npu.models.encoder.embeddings import mean_pool

KEY = "embed-key"


@pytest.fixture(scope="module")
def embedding_server(encoders):
    _, _, artifact = encoders["BertModel"]
    with ServerThread(artifact, served_model_name="tiny-bert", api_key=KEY) as running:
        yield running


def eager_embeddings(encoders, tokenizer, texts):
    _, eager, _ = encoders["BertModel"]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return mean_pool(eager(**batch).last_hidden_state, batch["attention_mask"])


def test_embeddings_equal_eager_through_the_openai_client(embedding_server, encoders):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(encoders["BertModel"][2])
    client = openai.OpenAI(base_url=f"{embedding_server.url}/v1", api_key=KEY, max_retries=0)
    texts = ["hello world", "a somewhat longer sentence for a longer bucket of tokens here", "x"]
    expected = eager_embeddings(encoders, tokenizer, texts)
    raw = client.embeddings.create(model="tiny-bert", input=texts, encoding_format="base64")
    decoded = [np.frombuffer(base64.b64decode(item.embedding), dtype="<f4") for item in raw.data]
    assert torch.allclose(torch.tensor(np.stack(decoded)), expected, atol=1e-5)
    for options in ({}, {"encoding_format": "float"}):   # by default the client asks for base64 and decodes it
        reply = client.embeddings.create(model="tiny-bert", input=texts, **options)
        got = torch.tensor([item.embedding for item in reply.data])
        assert [item.index for item in reply.data] == [0, 1, 2]
        assert torch.allclose(got, expected, atol=1e-5)
        assert reply.usage.prompt_tokens == sum(len(ids) for ids in tokenizer(texts)["input_ids"])
    ids = tokenizer("hello world")["input_ids"]
    one = client.embeddings.create(model="tiny-bert", input=ids, encoding_format="float")
    assert torch.allclose(torch.tensor(one.data[0].embedding), got[0], atol=1e-6)
    assert [m.id for m in client.models.list().data] == ["tiny-bert"]


@pytest.mark.parametrize("body, status, words", [
    ({"model": "other", "input": "hi"}, 404, "does not exist"),
    ({"model": "tiny-bert", "input": []}, 400, "'input' must hold 1 to"),
    ({"model": "tiny-bert", "input": [[1, 10 ** 9]]}, 400, "not in [0,"),
    ({"model": "tiny-bert", "input": "word " * 200}, 400, "bucket"),
    ({"model": "tiny-bert", "input": "hi", "dimensions": 3}, 400, "dimensions=3"),
])
def test_errors_are_openai_bodies(embedding_server, body, status, words):
    headers = {"Authorization": f"Bearer {KEY}"}
    reply = httpx2.post(f"{embedding_server.url}/v1/embeddings", json=body, headers=headers)
    assert reply.status_code == status and words in reply.json()["error"]["message"], reply.text
    assert httpx2.get(f"{embedding_server.url}/health").status_code == 200
    assert httpx2.post(f"{embedding_server.url}/v1/embeddings", json={"model": "tiny-bert", "input": "hi"}
                       ).status_code == 401
