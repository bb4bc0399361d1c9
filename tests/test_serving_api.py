"""The OpenAI-compatible server on loopback, through the official ``openai`` client (and raw ``httpx2`` for errors):
completions, chat, streaming, greedy parity with ``model.generate()``, errors, API key, disconnects, metrics."""

from __future__ import annotations

import json
from pathlib import Path
import time

import httpx2
import openai
import pytest

from serving_fixtures import ServerThread, served_pair  # noqa: F401

KEY = "test-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}
PROMPTS = ["Hello world", "The NPU serves many prompts at once", "a", "continuous batching " * 3]


@pytest.fixture(scope="module")
def server(served_pair, tmp_path_factory):
    with ServerThread(served_pair.artifact, served_model_name="tiny", api_key=KEY,
                      profile_dir=tmp_path_factory.mktemp("profiles")) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)


def expected(pair, tokenizer, prompt: str, max_tokens: int) -> list[int]:
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    return pair.model.generate(ids, max_new_tokens=max_tokens, do_sample=False)[0, ids.shape[1]:].tolist()


def test_completion_greedy_equals_generate(served_pair, tokenizer, client):
    for prompt, max_tokens in zip(PROMPTS, (12, 5, 20, 9)):
        want = expected(served_pair, tokenizer, prompt, max_tokens)
        reply = client.completions.create(model="tiny", prompt=prompt, max_tokens=max_tokens, temperature=0,
                                          extra_body={"skip_special_tokens": False, "return_token_ids": True})
        assert reply.choices[0].model_extra["token_ids"] == want
        assert reply.choices[0].text == tokenizer.decode(want)
        assert reply.usage.completion_tokens == len(want)
        assert reply.usage.prompt_tokens == len(tokenizer(prompt).input_ids)
        timing = reply.model_extra["npu"][0]
        assert timing["simulated_ttft_s"] > 0 and len(timing["simulated_itl_s"]) == len(want) - 1


def test_batch_of_prompts_keeps_order(served_pair, tokenizer, client):
    reply = client.completions.create(model="tiny", prompt=PROMPTS[:3], max_tokens=6, temperature=0)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    for choice, prompt in zip(reply.choices, PROMPTS):
        assert choice.text == tokenizer.decode(expected(served_pair, tokenizer, prompt, 6), skip_special_tokens=True)


def test_chat_and_streaming_agree(client, server):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Hi there"}]
    whole = client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0)
    chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens
    rendered = httpx2.post(f"{server.url}/tokenize", headers=HEADERS, json={"messages": messages}).json()
    assert rendered["count"] == whole.usage.prompt_tokens


def test_sampling_seed_n_logprobs_and_stop(client):
    args = dict(model="tiny", prompt="seeded", max_tokens=12, temperature=0.9, top_p=0.9, seed=7, n=2,
                extra_body={"top_k": 50, "min_p": 0.01, "repetition_penalty": 1.1})
    first, second = client.completions.create(**args), client.completions.create(**args)
    assert [c.text for c in first.choices] == [c.text for c in second.choices]     # same seed, same output
    assert first.choices[0].text != first.choices[1].text                          # n completions differ
    greedy = client.completions.create(model="tiny", prompt="stop here", max_tokens=12, temperature=0, logprobs=2)
    assert len(greedy.choices[0].logprobs.token_logprobs) == 12
    chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=5,
                                          temperature=0, logprobs=True, top_logprobs=2)
    for entry in chat.choices[0].logprobs.content:                              # greedy: the chosen token is the top
        assert len(entry.top_logprobs) == 2 and entry.logprob == entry.top_logprobs[0].logprob < 0
    stop = greedy.choices[0].text[3:5]
    cut = client.completions.create(model="tiny", prompt="stop here", max_tokens=12, temperature=0, stop=[stop])
    assert cut.choices[0].finish_reason == "stop" and cut.choices[0].text == greedy.choices[0].text.split(stop)[0]


def test_models_tokenize_detokenize(server, tokenizer):
    models = httpx2.get(f"{server.url}/v1/models", headers=HEADERS).json()
    assert models["data"][0]["id"] == "tiny" and models["data"][0]["max_model_len"] == 128
    tokens = httpx2.post(f"{server.url}/tokenize", headers=HEADERS, json={"prompt": "héllo"}).json()["tokens"]
    assert tokens == tokenizer("héllo").input_ids
    text = httpx2.post(f"{server.url}/detokenize", headers=HEADERS, json={"tokens": tokens}).json()["prompt"]
    assert text == "héllo"


@pytest.mark.parametrize("body, status, param, words", [
    (b"{not json", 422, None, "not valid JSON"),
    ({"model": "other", "prompt": "x"}, 404, "model", "does not exist"),
    ({"model": "tiny", "prompt": "x", "temperature": -1}, 400, "temperature", "temperature=-1"),
    ({"model": "tiny", "prompt": "x", "top_p": 0}, 400, "top_p", "(0, 1]"),
    ({"model": "tiny", "prompt": "x", "max_tokens": "many"}, 400, "max_tokens", "integer"),
    ({"model": "tiny", "prompt": "x" * 100, "max_tokens": 40}, 400, "max_tokens", "100 tokens) + max_tokens (40) = 140"),
    ({"model": "tiny", "prompt": "x" * 130}, 400, "prompt", "max_seq_len=128"),
    ({"model": "tiny", "prompt": [999999]}, 400, "prompt", "not in [0, 258]"),
    ({"model": "tiny", "prompt": "x", "echo": True}, 400, "echo", "not supported"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}, 400, "tools",
     "not supported"),
    ({"model": "tiny", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}, 400, "messages[0].content",
     "text parts only"),
    ({"model": "tiny", "messages": []}, 400, "messages", "at least 1"),
])
def test_errors_are_openai_bodies(server, body, status, param, words):
    path = "/v1/chat/completions" if isinstance(body, dict) and "messages" in body else "/v1/completions"
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    response = httpx2.post(f"{server.url}{path}", headers=HEADERS, **kwargs)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and words in error["message"], error
    assert "Traceback" not in response.text
    assert httpx2.get(f"{server.url}/health").status_code == 200


def test_oversized_body_is_refused(server):
    response = httpx2.post(f"{server.url}/v1/completions", headers=HEADERS, content=b" " * (8 * 1024 * 1024 + 1))
    assert response.status_code == 413 and "more than 8388608" in response.json()["error"]["message"]


def test_api_key_enforced(server, client):
    assert httpx2.get(f"{server.url}/health").status_code == 200                  # /health needs no key
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = httpx2.get(f"{server.url}/v1/models", headers=headers)
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    assert httpx2.get(f"{server.url}/metrics").status_code == 401
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0).models.list()
    assert client.models.list().data[0].id == "tiny"


def test_disconnect_mid_stream_frees_blocks(server):
    before = server.metric("vllm:generation_tokens_total", HEADERS)
    body = {"model": "tiny", "prompt": "a long story", "max_tokens": 100, "temperature": 0, "stream": True,
            "ignore_eos": True}
    with httpx2.stream("POST", f"{server.url}/v1/completions", headers=HEADERS, json=body) as response:
        chunks = 0
        for line in response.iter_lines():
            chunks += line.startswith("data:")
            if chunks == 3:
                break                                                          # the client goes away
    deadline = time.monotonic() + 10
    while server.metric("vllm:num_requests_running", HEADERS) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.metric("vllm:num_requests_running", HEADERS) == 0
    assert server.metric("vllm:kv_cache_usage_perc", HEADERS) == 0.0
    generated = server.metric("vllm:generation_tokens_total", HEADERS) - before
    assert 3 <= generated < 100                                                # aborted, not run to the end


def test_profile_writes_perfetto_trace(server, client, tmp_path):
    assert httpx2.post(f"{server.url}/start_profile", headers=HEADERS).status_code == 200
    client.completions.create(model="tiny", prompt="profile me", max_tokens=4, temperature=0)
    reply = httpx2.post(f"{server.url}/stop_profile", headers=HEADERS).json()
    assert Path(reply["trace"]).parent == server.server.options.profile_dir  # never the working directory
    trace = json.loads(open(reply["trace"]).read())
    names = {event.get("name") for event in trace["traceEvents"]}
    assert {"prefill", "decoder_batch_1"} <= names and reply["graph_calls"] == 4
    assert httpx2.post(f"{server.url}/stop_profile", headers=HEADERS).status_code == 400
