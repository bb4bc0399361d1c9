"""The offline ``LLM`` API: outputs in input order with tokens, text, finish reason and simulated timings."""

from __future__ import annotations

import pytest

from optimum_npu import LLM, SamplingParams
from optimum_npu.runtime import RequestTooLongError
from optimum_npu.serving import InvalidParameterError
from serving_fixtures import served_pair  # noqa: F401

PROMPTS = ["first prompt", "a much longer second prompt that takes two prefill chunks", "3"]


@pytest.fixture(scope="module")
def llm(served_pair):
    offline = LLM(served_pair.artifact)
    yield offline
    offline.release()


def test_outputs_in_input_order_match_generate(llm, served_pair, tokenizer):
    lengths = [9, 3, 14]
    outputs = llm.generate(PROMPTS, [SamplingParams(temperature=0, max_tokens=n) for n in lengths], use_tqdm=False)
    for output, prompt, n in zip(outputs, PROMPTS, lengths):
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        want = served_pair.model.generate(ids, max_new_tokens=n, do_sample=False)[0, ids.shape[1]:].tolist()
        completion = output.outputs[0]
        assert output.prompt == prompt and output.prompt_token_ids == ids[0].tolist()
        assert completion.token_ids == want and completion.finish_reason == "length"
        assert completion.text == tokenizer.decode(want, skip_special_tokens=True)
        assert completion.ttft_s > 0 and len(completion.itl_s) == n - 1 and completion.e2e_s >= completion.ttft_s
    assert llm.stats.buckets["prefill"] >= 5 and llm.stats.decode_rows > 0


def test_stop_strings_seed_and_n(llm):
    greedy = llm.generate("stop test", SamplingParams(temperature=0, max_tokens=12), use_tqdm=False)[0].outputs[0]
    stop = greedy.text[4:6]
    cut = llm.generate("stop test", SamplingParams(temperature=0, max_tokens=12, stop=[stop]),
                       use_tqdm=False)[0].outputs[0]
    assert cut.finish_reason == "stop" and cut.text == greedy.text[:greedy.text.index(stop)]
    params = SamplingParams(temperature=1.0, top_k=40, seed=11, n=3, max_tokens=8)
    first, second = (llm.generate(["seeded"], params, use_tqdm=False)[0] for _ in range(2))
    assert [c.token_ids for c in first.outputs] == [c.token_ids for c in second.outputs]
    assert [c.index for c in first.outputs] == [0, 1, 2] and len({tuple(c.token_ids) for c in first.outputs}) > 1


def test_refusals_before_anything_runs(llm):
    with pytest.raises(RequestTooLongError, match=r"prompt 1: prompt \(100 tokens\) \+ max_tokens \(50\) = 150"):
        llm.generate(["ok", "x" * 100], SamplingParams(max_tokens=50), use_tqdm=False)
    assert not llm.core.scheduler.has_work and not llm.core.groups
    with pytest.raises(InvalidParameterError, match=r"top_p=1.5 is invalid") as err:
        SamplingParams(top_p=1.5)
    assert err.value.param == "top_p"
