"""Session fixture shared by the MoE tests (imported in conftest.py): per architecture, the tiny eager model, its
greedy generation of the left-padded batch of 3, and the same on one device (flash partitions), compiled once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import pytest

from optimum_npu import NPUModelForCausalLM
from optimum_npu.models.tiny import build_causal_lm, build_tokenizer
from tests.test_architectures import BATCH_PROMPTS, GREEDY

#: The compile knobs of the MoE parity tests: flash partitions, so attention runs partition by partition.
MOE_KNOBS = {"max_seq_len": 128, "batch_size": 4, "decoder_batch_sizes": [1, 4], "prefill_chunk_size": 16,
             "attn_impl": "flash_attn", "kvcache_block_size": 16, "kvcache_partition_len": 32}


@dataclass
class MoERun:
    """A tiny MoE model (4 key/value heads, so TP 4 divides them), on one device and in eager Transformers."""

    reference: Any            # the eager HF model
    one_device: Any           # NPUModelForCausalLM compiled with MOE_KNOBS (released at the end of the session)
    inputs: Any               # BATCH_PROMPTS, tokenized and left-padded
    eager: Any                # reference.generate(**inputs, **GREEDY)
    on_one_device: Any        # one_device.generate(**inputs, **GREEDY)


@pytest.fixture(scope="session")
def moe_runs() -> Callable[[str], MoERun]:
    """``moe_runs(architecture)`` -> its ``MoERun``, built once per session."""
    cache: dict[str, MoERun] = {}

    def get(architecture: str) -> MoERun:
        if architecture not in cache:
            reference = build_causal_lm(architecture, num_key_value_heads=4)
            inputs = build_tokenizer()(BATCH_PROMPTS, return_tensors="pt", padding=True)
            model = NPUModelForCausalLM.from_model(reference, npu_config=MOE_KNOBS)
            cache[architecture] = MoERun(reference, model, inputs, reference.generate(**inputs, **GREEDY),
                                         model.generate(**inputs, **GREEDY))
        return cache[architecture]

    yield get
    for run in cache.values():
        run.one_device.release()
