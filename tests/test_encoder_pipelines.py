"""Transformers pipelines on compiled encoders give the eager pipelines' results.

Transformers 5 removed the ``question-answering`` pipeline; ``NPUModelForQuestionAnswering``'s logits are
checked against eager in ``test_encoders.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, pipeline


TEXTS = ["the cat sat on the mat", "paris is the capital of france", "a big red car on the road"]
CASES = {
    "feature-extraction": ("BertModel", {"inputs": TEXTS}),
    "text-classification": ("RobertaForSequenceClassification", {"inputs": TEXTS, "top_k": None}),
    "fill-mask": ("XLMRobertaForMaskedLM", {"inputs": ["the cat [MASK] on the mat", "paris is the [MASK] of france"]}),
    "token-classification": ("BertForTokenClassification", {"inputs": TEXTS}),
}


def close(found, expected, path: str = "") -> None:
    """Equal structures; floats within 1e-4, strings and ints exactly."""
    if isinstance(expected, dict):
        assert found.keys() == expected.keys(), path
        for key in expected:
            close(found[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(found) == len(expected), path
        for i, (a, b) in enumerate(zip(found, expected)):
            close(a, b, f"{path}[{i}]")
    elif isinstance(expected, (float, np.floating)):
        assert found == pytest.approx(expected, abs=1e-4), path
    else:
        assert found == expected, path


@pytest.mark.parametrize("task", list(CASES))
def test_pipeline_equals_the_eager_pipeline(encoders, task):
    architecture, call = CASES[task]
    npu, eager, artifact = encoders[architecture]
    tokenizer = AutoTokenizer.from_pretrained(artifact)
    found = pipeline(task, model=npu, tokenizer=tokenizer)(**call)
    expected = pipeline(task, model=eager, tokenizer=tokenizer)(**call)
    if task == "feature-extraction":   # nested lists of floats per token
        for a, b in zip(found, expected):
            torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-4, rtol=0)
    else:
        close(found, expected)
    assert npu.npu_stats.calls, "the pipeline ran on the compiled graphs"
