"""Quality of each quantization format, measured against the unquantized model over a fixed token stream.

Bounds that a broken quantizer fails: int8 weights agree with the unquantized model on the next token at
>= 95% of the positions; int4 (8x coarser steps) is measurably worse; an fp8 KV cache keeps the mean KL
divergence of the next-token distributions under ``FP8_KV_KL_BOUND``. The reference is eager Transformers
in float32 (which the unquantized compile matches, ``test_parity``).
"""

from __future__ import annotations

import pytest

from optimum_npu.models.decoder.quality import agreement, reference_logits, stream_logits
from test_quantization import KNOBS

#: A fixed stream of 64 byte tokens (the tiny tokenizer is byte-level).
TEXT = "The quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs."
#: Mean KL(unquantized || fp8 KV cache) allowed, in nats (measured about 2e-6 on this model).
FP8_KV_KL_BOUND = 2e-5
pytestmark = pytest.mark.slow  # one compile and a 64-step teacher-forced stream per format
FORMATS = {**KNOBS, "fp8_kv": {"npu": "rngd", "quantization": {"kv_cache": "fp8"}}}


@pytest.fixture(scope="module")
def stream(tokenizer) -> list[int]:
    return tokenizer(TEXT)["input_ids"][:64]


@pytest.fixture(scope="module")
def measured(make_compiled, stream):
    """Agreement with the float32 reference of each format (one compile each, shared with test_quantization)."""
    results = {}
    for name, knobs in FORMATS.items():
        pair = make_compiled("LlamaForCausalLM", knobs)
        results[name] = agreement(reference_logits(pair.ref, stream), stream_logits(pair.model, stream))
    return results


def test_int8_agrees_on_the_next_token_at_least_95_percent_of_the_time(measured):
    assert measured["int8"].positions == 64
    assert measured["int8"].top1 >= 0.95


def test_int4_is_worse_than_int8(measured):
    assert measured["int4"].kl > 10 * measured["int8"].kl
    assert measured["int4"].top1 < measured["int8"].top1


def test_fp8_weights_and_kv_cache_stay_close(measured):
    assert measured["fp8"].top1 >= 0.9
    assert 0 < measured["fp8_kv"].kl <= FP8_KV_KL_BOUND  # > 0: the cache really is rounded
    assert measured["fp8_kv"].top1 >= 0.9


def test_unquantized_compile_is_the_reference(make_compiled, stream):
    pair = make_compiled("LlamaForCausalLM")
    same = agreement(reference_logits(pair.ref, stream), stream_logits(pair.model, stream))
    assert same.top1 == 1.0 and same.kl < 1e-9


def test_fp8_kv_cache_of_sliding_window_rings(make_compiled, stream):
    """Gemma 3's local layers keep fp8 rings (``sliding_window_attention`` with scales) beside its global pool."""
    pair = make_compiled("Gemma3ForCausalLM", FORMATS["fp8_kv"])
    assert {spec.dtype for spec in pair.model._runtime.engine.graphs["prefill"].inputs_of_kind("kv_cache")} == \
        {"float8_e4m3fn", "float32"}
    measured = agreement(reference_logits(pair.ref, stream), stream_logits(pair.model, stream))
    assert 0 < measured.kl <= 10 * FP8_KV_KL_BOUND and measured.top1 >= 0.9
