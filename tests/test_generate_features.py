"""Transformers ``generate()`` features on a compiled model (Llama), each checked against eager HF.

The compiled model plugs into GenerationMixin, so logits processors, stopping criteria and
streamers are HF's own; these tests check that the NPU runtime feeds them the same logits and
honours their decisions (stopping, finished rows, expanded batches, length limits).
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers.generation.streamers import BaseStreamer

from marks import first_fast

CHUNK = 16
LONG_PROMPT = "The quick brown fox jumps over the lazy dog"  # 43 tokens: 3 prefill chunks
#: 21 tokens; its 5th greedy token does not occur among the first four (see the EOS tests).
EOS_PROMPT = "Once upon a time, far"
BATCH_PROMPTS = ["Once upon a time, far", "hi", "Hello world!"]
SAMPLING = dict(do_sample=True, temperature=0.7, top_k=20, top_p=0.9)


def _encode(tokenizer, prompts: list[str]):
    return tokenizer(prompts, return_tensors="pt", padding=True)


def _both(pair, inputs, seed: int | None = None, **kwargs):
    """Runs the NPU model and the eager reference with identical arguments (and RNG state when seeded)."""
    if seed is not None:
        torch.manual_seed(seed)
    out = pair.model.generate(**inputs, **kwargs)
    if seed is not None:
        torch.manual_seed(seed)
    ref = pair.ref.generate(**inputs, **kwargs)
    return out, ref


def _greedy_new_tokens(pair, inputs, max_new_tokens: int = 24) -> list[list[int]]:
    out = pair.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return out[:, inputs.input_ids.shape[1]:].tolist()


# ---- sampling --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", first_fast([0, 1234]))
def test_sampling_with_seed_matches_hf(llama, tokenizer, seed):
    inputs = _encode(tokenizer, BATCH_PROMPTS)
    out, ref = _both(llama, inputs, seed=seed, max_new_tokens=24, **SAMPLING)

    assert out.shape == (3, inputs.input_ids.shape[1] + 24)
    assert out.tolist() == ref.tolist()
    # Sampling really happened: it departs from greedy decoding.
    greedy = llama.model.generate(**inputs, max_new_tokens=24, do_sample=False)
    assert out.tolist() != greedy.tolist()


def test_sampling_is_reproducible_and_seed_dependent(llama, tokenizer):
    inputs = _encode(tokenizer, [LONG_PROMPT])
    runs = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        runs.append(llama.model.generate(**inputs, max_new_tokens=16, **SAMPLING).tolist())
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_num_return_sequences_with_sampling(llama, tokenizer):
    inputs = _encode(tokenizer, [LONG_PROMPT])
    prompt_len = inputs.input_ids.shape[1]
    out, ref = _both(llama, inputs, seed=3, max_new_tokens=16, num_return_sequences=2, **SAMPLING)

    assert out.shape == (2, prompt_len + 16)
    assert out.tolist() == ref.tolist()
    assert torch.equal(out[:, :prompt_len], inputs.input_ids.expand(2, -1))
    assert out[0].tolist() != out[1].tolist()  # two independent samples
    # One prompt expanded to 2 sequences: 2 prefills of 3 chunks each, then the batch-2 decode graph.
    buckets = llama.model.npu_stats.buckets
    assert buckets["prefill"] == 2 * math.ceil(prompt_len / CHUNK)
    assert buckets["decoder_batch_2"] == 15 and buckets["decoder_batch_1"] == buckets["decoder_batch_4"] == 0


def test_num_return_sequences_beyond_batch_size_is_refused(llama, tokenizer):
    inputs = _encode(tokenizer, BATCH_PROMPTS)  # 3 prompts x 2 = 6 sequences > batch_size 4
    with pytest.raises(ValueError, match="batch_size=4"):
        llama.model.generate(**inputs, max_new_tokens=4, num_return_sequences=2, **SAMPLING)


# ---- logits processors -------------------------------------------------------------------------------------------
def test_repetition_penalty_greedy_matches_hf(llama, tokenizer):
    inputs = _encode(tokenizer, BATCH_PROMPTS)
    out, ref = _both(llama, inputs, max_new_tokens=24, do_sample=False, repetition_penalty=1.3)

    assert out.tolist() == ref.tolist()
    # The penalty changed the outcome (plain greedy repeats tokens in these rows).
    plain = llama.model.generate(**inputs, max_new_tokens=24, do_sample=False)
    assert out.tolist() != plain.tolist()


# ---- stopping ----------------------------------------------------------------------------------------------------
def test_eos_token_id_stops_generation(llama, tokenizer):
    inputs = _encode(tokenizer, [EOS_PROMPT])
    prompt_len = inputs.input_ids.shape[1]
    tokens = _greedy_new_tokens(llama, inputs)[0]
    eos = tokens[4]
    assert eos not in tokens[:4], "pick a prompt whose 5th greedy token is new"

    out, ref = _both(llama, inputs, max_new_tokens=24, do_sample=False, eos_token_id=eos)

    assert out.shape == (1, prompt_len + 5)
    assert out[0, prompt_len:].tolist() == tokens[:5]
    assert out.tolist() == ref.tolist()
    assert llama.model.npu_stats.decode_steps == 4


def test_eos_in_batch_pads_finished_row(llama, tokenizer):
    """A row that hits EOS is padded with pad_token_id while the other rows keep decoding, as in HF."""
    inputs = _encode(tokenizer, [EOS_PROMPT, "hi"])
    width = inputs.input_ids.shape[1]
    tokens = _greedy_new_tokens(llama, inputs)
    eos = tokens[0][4]
    assert eos not in tokens[0][:4] and eos not in tokens[1]

    out, ref = _both(llama, inputs, max_new_tokens=24, do_sample=False, eos_token_id=eos)

    assert out.tolist() == ref.tolist()
    assert out.shape == (2, width + 24)
    pad = llama.model.generation_config.pad_token_id
    assert out[0, width:].tolist() == tokens[0][:5] + [pad] * 19
    assert out[1, width:].tolist() == tokens[1]


def test_stop_strings_stop_early(llama, tokenizer):
    inputs = _encode(tokenizer, [LONG_PROMPT])
    prompt_len = inputs.input_ids.shape[1]
    tokens = _greedy_new_tokens(llama, inputs)[0]
    texts = [tokenizer.decode([t]) for t in tokens]
    # The first generated token (after the first two) that decodes to a fresh alphanumeric character.
    index = next(i for i in range(2, len(tokens)) if texts[i].isascii() and texts[i].isalnum()
                 and texts[i] not in texts[:i])
    stop = texts[index]

    out, ref = _both(llama, inputs, max_new_tokens=24, do_sample=False, stop_strings=[stop], tokenizer=tokenizer)

    assert out.shape == (1, prompt_len + index + 1)
    assert out[0, prompt_len:].tolist() == tokens[:index + 1]
    assert tokenizer.decode(out[0, prompt_len:]).endswith(stop)
    assert out.tolist() == ref.tolist()


# ---- streaming ---------------------------------------------------------------------------------------------------
class RecordingStreamer(BaseStreamer):
    def __init__(self):
        self.puts: list[torch.Tensor] = []
        self.ends = 0

    def put(self, value):
        self.puts.append(value.detach().clone())

    def end(self):
        self.ends += 1


def test_streamer_receives_the_returned_tokens(llama, tokenizer):
    inputs = _encode(tokenizer, [LONG_PROMPT])
    prompt_len = inputs.input_ids.shape[1]
    streamer = RecordingStreamer()

    out = llama.model.generate(**inputs, max_new_tokens=12, do_sample=False, streamer=streamer)

    assert streamer.ends == 1
    assert len(streamer.puts) == 1 + 12  # the prompt, then one put per new token
    assert streamer.puts[0].tolist() == inputs.input_ids.tolist()
    streamed = [int(t) for value in streamer.puts[1:] for t in value.reshape(-1)]
    assert streamed == out[0, prompt_len:].tolist()
    assert streamed == _greedy_new_tokens(llama, inputs, 12)[0]


# ---- length limits -----------------------------------------------------------------------------------------------
def test_max_length_instead_of_max_new_tokens(llama, tokenizer):
    inputs = _encode(tokenizer, [LONG_PROMPT])
    prompt_len = inputs.input_ids.shape[1]
    out, ref = _both(llama, inputs, max_length=prompt_len + 10, do_sample=False)

    assert out.shape == (1, prompt_len + 10)
    assert out.tolist() == ref.tolist()


def test_max_length_up_to_max_seq_len_fills_the_cache(llama, tokenizer):
    """max_length == max_seq_len is allowed: the last decode step writes the last KV-cache slot."""
    inputs = _encode(tokenizer, [LONG_PROMPT])
    max_seq_len = llama.model.npu_config.max_seq_len
    out, ref = _both(llama, inputs, max_length=max_seq_len, do_sample=False)

    assert out.shape == (1, max_seq_len)
    assert out.tolist() == ref.tolist()


@pytest.mark.parametrize("limit", [{"max_length": 129}, {"max_new_tokens": 128 - 43 + 1}])
def test_length_beyond_max_seq_len_is_refused(llama, tokenizer, limit):
    inputs = _encode(tokenizer, [LONG_PROMPT])
    assert inputs.input_ids.shape[1] == 43
    with pytest.raises(ValueError, match="max_seq_len=128"):
        llama.model.generate(**inputs, do_sample=False, **limit)
