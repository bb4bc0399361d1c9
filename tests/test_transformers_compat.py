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
