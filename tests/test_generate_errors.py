"""generate() refuses requests outside the compiled envelope before running any graph."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from optimum_npu import NPUModelForCausalLM
from optimum_npu.models.tiny import save_causal_lm

MAX_SEQ_LEN = 64
BATCH_SIZE = 2


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    checkpoint = save_causal_lm(Path(tmp_path_factory.mktemp("hf")) / "ckpt", "LlamaForCausalLM")
    compiled = NPUModelForCausalLM.from_pretrained(checkpoint, export=True, npu_config={
        "max_seq_len": MAX_SEQ_LEN, "batch_size": BATCH_SIZE, "prefill_chunk_size": 16})
    yield compiled
    compiled.release()


def prompt(batch: int, length: int) -> torch.Tensor:
    return torch.arange(3, 3 + batch * length).view(batch, length) % 250 + 3


def test_batch_larger_than_batch_size(model, no_graph_runs):
    with pytest.raises(ValueError) as err:
        model.generate(prompt(3, 5), max_new_tokens=2, do_sample=False)
    message = str(err.value)
    assert "batch of 3 sequences" in message and f"batch_size={BATCH_SIZE}" in message
    assert "batch_size >= 3" in message
    assert no_graph_runs == []


def test_num_return_sequences_counts_toward_the_batch(model, no_graph_runs):
    with pytest.raises(ValueError) as err:
        model.generate(prompt(2, 5), max_new_tokens=2, do_sample=True, num_return_sequences=2)
    message = str(err.value)
    assert "batch of 4 sequences" in message and f"batch_size={BATCH_SIZE}" in message
    assert no_graph_runs == []


def test_prompt_plus_max_new_tokens_above_max_seq_len(model, no_graph_runs):
    with pytest.raises(ValueError) as err:
        model.generate(prompt(1, 10), max_new_tokens=55, do_sample=False)
    message = str(err.value)
    assert f"max_seq_len={MAX_SEQ_LEN}" in message
    assert "prompt (10 tokens) + new tokens (55) = 65" in message
    assert "max_new_tokens" in message
    assert no_graph_runs == []


def test_max_length_above_max_seq_len(model, no_graph_runs):
    with pytest.raises(ValueError) as err:
        model.generate(prompt(1, 10), max_length=65, do_sample=False)
    message = str(err.value)
    assert f"max_seq_len={MAX_SEQ_LEN}" in message and "= 65" in message
    assert no_graph_runs == []


def test_generation_config_max_length_above_max_seq_len(model, no_graph_runs):
    from transformers import GenerationConfig

    config = GenerationConfig(max_length=100, do_sample=False, pad_token_id=0, eos_token_id=2)
    with pytest.raises(ValueError) as err:
        model.generate(prompt(1, 10), generation_config=config)
    assert f"max_seq_len={MAX_SEQ_LEN}" in str(err.value) and "= 100" in str(err.value)
    assert no_graph_runs == []


def test_num_beams_refused(model, no_graph_runs):
    with pytest.raises(ValueError) as err:
        model.generate(prompt(1, 5), max_new_tokens=3, num_beams=2, do_sample=False)
    message = str(err.value)
    assert "num_beams=2 is not supported" in message and "num_beams=1" in message
    assert no_graph_runs == []


def test_input_ids_must_be_2d(model, no_graph_runs):
    with pytest.raises(ValueError) as err:
        model.generate(torch.tensor([1, 2, 3]), max_new_tokens=3)
    assert "[batch, seq_len]" in str(err.value)
    assert no_graph_runs == []


def test_exactly_max_seq_len_is_accepted(model):
    length = MAX_SEQ_LEN - 4  # a 60-token prompt runs as 4 prefill chunks of 16
    out = model.generate(prompt(1, length), max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape == (1, MAX_SEQ_LEN)
    assert model.npu_stats.buckets["prefill"] == 4 and model.npu_stats.decode_steps == 3
    out = model.generate(prompt(1, length), max_length=MAX_SEQ_LEN, min_length=MAX_SEQ_LEN, do_sample=False)
    assert out.shape == (1, MAX_SEQ_LEN)


def test_left_padding_does_not_count_toward_max_seq_len(model):
    """The limit applies to real tokens: a row of 62 columns with 60 real tokens (left padding)
    may still generate max_seq_len - 60 tokens."""
    ids = prompt(2, MAX_SEQ_LEN - 2)
    mask = torch.ones_like(ids)
    mask[:, :2] = 0
    ids[:, :2] = 0
    out = model.generate(ids, attention_mask=mask, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape == (2, MAX_SEQ_LEN - 2 + 4)
    assert model.npu_stats.decode_steps == 3
    with pytest.raises(ValueError, match=f"max_seq_len={MAX_SEQ_LEN}"):
        model.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False)
