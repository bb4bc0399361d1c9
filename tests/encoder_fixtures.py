"""Tiny encoders of every task compiled once per session (the ``encoders`` fixture, registered in conftest.py)."""

from __future__ import annotations

import pytest
import transformers

from optimum_npu import NPUEncoderModel
from optimum_npu.models.encoder.tiny import save_encoder

GRID = {"seq_lens": [8, 32], "batch_sizes": [1, 4]}
#: The other cases compile one batch bucket (captures are the slow part of these tests).
SMALL_GRID = {"seq_lens": [8, 32], "batch_sizes": [4]}
#: One architecture per task, covering the four encoder model types.
CASES = ["BertModel", "RobertaForSequenceClassification", "XLMRobertaForMaskedLM", "DistilBertForQuestionAnswering",
         "BertForTokenClassification"]


@pytest.fixture(scope="session")
def encoders(tmp_path_factory):
    """architecture -> (reloaded NPU model, eager HF model, artifact dir with the tokenizer); compiled once,
    released at the end."""
    models = {}
    for architecture in CASES:
        root = tmp_path_factory.mktemp(architecture)
        checkpoint = save_encoder(architecture, root / "hf")
        grid = GRID if architecture == "BertModel" else SMALL_GRID
        npu = NPUEncoderModel.from_pretrained(checkpoint, export=True, npu_config=grid)
        npu.save_pretrained(root / "npu")
        npu.release()
        eager = getattr(transformers, architecture).from_pretrained(checkpoint).eval()
        models[architecture] = (NPUEncoderModel.from_pretrained(root / "npu"), eager, root / "npu")
    yield models
    for npu, _, _ in models.values():
        npu.release()


