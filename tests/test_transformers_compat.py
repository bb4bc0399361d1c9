"""Transformers habits on a compiled model: dtype, device, num_parameters, repr, pipelines, dtype="auto"."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import pipeline

from optimum_npu import NPUConfigError, NPUModelForCausalLM
from optimum_npu.models.hf_compat import requested_dtype
from optimum_npu.models.tiny import build_tokenizer


def test_dtype_device_and_parameter_count(llama):
    model, ref = llama.model, llama.ref
    assert model.dtype == torch.float32 and model.device == torch.device("cpu")
    ids = torch.tensor([[1, 5, 7]])
    assert ids.to(model.dtype).dtype == torch.float32  # the line that raised StopIteration before
    assert model.num_parameters() == ref.num_parameters() > 0
    assert model.num_parameters(exclude_embeddings=True) == ref.num_parameters(exclude_embeddings=True)


def test_repr_shows_the_artifact(llama):
    text = repr(llama.model)
    for part in ("NPUModelForCausalLM(", "LlamaForCausalLM", "npu=atom", "dtype=float32", "max_seq_len=128",
                 "prefill=['1x16']", "decode_batches=[1, 2, 4]", "npu:0 (atom)", str(llama.artifact)):
        assert part in text, (part, text)


def test_text_generation_pipeline_accepts_the_class(llama, caplog):
    tokenizer = build_tokenizer()
    caplog.set_level(logging.ERROR)
    generate = pipeline("text-generation", model=llama.model, tokenizer=tokenizer)
    assert "is not supported for text-generation" not in caplog.text
    expected = pipeline("text-generation", model=llama.ref, tokenizer=tokenizer)
    options = dict(max_new_tokens=5, do_sample=False)
    assert generate("Hello there", **options) == expected("Hello there", **options)


def test_dtype_auto_and_a_mismatched_dtype_at_load(llama):
    for option in ({"dtype": "auto"}, {"torch_dtype": "auto"}, {"dtype": torch.float32}):
        model = NPUModelForCausalLM.from_pretrained(llama.artifact, **option)
        model.release()
    with pytest.raises(ValueError, match=r"dtype='float16'.*compiled for float32.*dtype='auto'"):
        NPUModelForCausalLM.from_pretrained(llama.artifact, dtype=torch.float16)


def test_dtype_at_export_goes_into_the_compile_knobs():
    assert NPUModelForCausalLM._with_compile_dtype({"max_seq_len": 64}, "bfloat16").dtype == "bfloat16"
    with pytest.raises(NPUConfigError, match="dtype='bfloat16' differs from npu_config dtype='float16'"):
        NPUModelForCausalLM._with_compile_dtype({"dtype": "float16"}, "bfloat16")


@pytest.mark.parametrize("kwargs, message", [
    ({"dtype": "float64"}, "dtype='float64' is not supported"),
    ({"dtype": torch.int8}, "dtype=torch.int8 is not supported"),
    ({"dtype": "float16", "torch_dtype": "bfloat16"}, "disagree"),
])
def test_dtype_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        requested_dtype(dict(kwargs))


def test_logits_of_every_position_for_scoring(make_compiled):
    """``model(ids, logits_to_keep=0).logits`` is [B, S, V] through the prefill_all_logits graph (compiled on
    request), equal to eager Transformers' logits at every real position; the default graphs refuse it."""
    pair = make_compiled("LlamaForCausalLM", {"prefill_logits": "all"})
    assert "prefill_all_logits" in pair.model.npu_graphs
    ids = torch.tensor([[0, 0, 1, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31, 33, 35, 37, 39],
                        [1, 5, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34, 36, 38, 40]])
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    logits = pair.model(ids, attention_mask=mask, logits_to_keep=0).logits
    assert logits.shape == (2, 20, pair.ref.config.vocab_size)
    for row in range(2):
        real = mask[row].bool()
        with torch.no_grad():
            expected = pair.ref(ids[row][real][None]).logits[0]
        torch.testing.assert_close(logits[row, real], expected, atol=1e-4, rtol=0)
        assert not logits[row, ~real].any()
    torch.testing.assert_close(pair.model(ids, attention_mask=mask).logits[:, 0], logits[:, -1], atol=1e-5, rtol=0)


def test_every_position_needs_the_knob(llama):
    ids = torch.tensor([[1, 5, 7]])
    with pytest.raises(ValueError, match="recompile with npu_config=\\{'prefill_logits': 'all'\\}"):
        llama.model(ids, logits_to_keep=0)
    with pytest.raises(ValueError, match="logits_to_keep=3"):
        llama.model(ids, logits_to_keep=3)
