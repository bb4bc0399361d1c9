"""The server under load (slow): 32 concurrent clients with mixed lengths each get their own greedy output, and
a KV pool small enough to force preemption still answers every request correctly."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import torch

from serving_fixtures import ServerThread, served_pair  # noqa: F401

pytestmark = pytest.mark.slow


def workload(count: int, seed: int) -> list[tuple[str, int]]:
    """Prompts of 1-40 characters and outputs of 1-40 tokens, drawn with a fixed seed."""
    rng = torch.Generator().manual_seed(seed)
    prompts = []
    for index in range(count):
        length = int(torch.randint(1, 41, (1,), generator=rng))
        letters = torch.randint(97, 123, (length,), generator=rng).tolist()
        prompts.append((f"{index}:" + "".join(map(chr, letters)), int(torch.randint(1, 41, (1,), generator=rng))))
    return prompts


def expected_outputs(pair, tokenizer, items: list[tuple[str, int]]) -> list[list[int]]:
    """Greedy tokens of every prompt from ``model.generate()`` (batches of 8), cut at its length and at EOS."""
    eos = pair.model.generation_config.eos_token_id
    outputs = []
    for start in range(0, len(items), 8):
        batch = items[start:start + 8]
        encoded = tokenizer([p for p, _ in batch], return_tensors="pt", padding=True)
        longest = max(n for _, n in batch)
        generated = pair.model.generate(**encoded, max_new_tokens=longest, do_sample=False)
        for row, (_, n) in enumerate(batch):
            tokens = generated[row, encoded.input_ids.shape[1]:].tolist()[:n]
            outputs.append(tokens[:tokens.index(eos) + 1] if eos in tokens else tokens)
    return outputs


def ask_all(server, items, workers: int) -> list[list[int]]:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=300)

    def ask(item):
        prompt, n = item
        reply = client.completions.create(model="tiny", prompt=prompt, max_tokens=n, temperature=0,
                                          extra_body={"return_token_ids": True})
        return reply.choices[0].model_extra["token_ids"]

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(ask, items))


def test_32_concurrent_clients_each_get_their_own_output(served_pair, tokenizer):
    items = workload(32, seed=0)
    want = expected_outputs(served_pair, tokenizer, items)
    with ServerThread(served_pair.artifact, served_model_name="tiny") as server:
        got = ask_all(server, items, workers=32)
        assert server.metric("vllm:num_requests_running") == 0
        assert server.metric("optimum_npu:decode_padding_waste_ratio") < 1.0
    assert got == want


def test_small_pool_preempts_and_answers_correctly(served_pair, tokenizer):
    items = [(f"{i} preempt me please " * 2, 40) for i in range(8)]
    want = expected_outputs(served_pair, tokenizer, items)
    with ServerThread(served_pair.artifact, served_model_name="tiny", num_kv_blocks=8) as server:
        got = ask_all(server, items, workers=8)
        assert server.metric("vllm:num_preemptions_total") > 0
        assert server.metric("vllm:kv_cache_usage_perc") == 0.0
    assert got == want
