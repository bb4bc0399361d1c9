"""Task auto classes of the encoder family: they accept encoder checkpoints and artifacts and compile or load
their task's class (``NPUAutoModel`` itself loads an encoder artifact with the class of its stored task)."""

from __future__ import annotations

import os
from pathlib import Path

from optimum_npu.models.auto import NPUAutoModel, family_of
from optimum_npu.models.base import HUB_KWARGS
from optimum_npu.models.encoder import modeling


class _NPUAutoEncoder(NPUAutoModel):
    families = ("encoder",)
    task_class: type = modeling.NPUEncoderModel

    @classmethod
    def from_pretrained(cls, model_id: str | os.PathLike, *, export: bool = False, **kwargs):
        """As ``NPUAutoModel.from_pretrained``, refusing any other family, with this task's class."""
        path, family = family_of(model_id, {k: kwargs[k] for k in HUB_KWARGS if k in kwargs})
        if family is None or family.name != "encoder":
            return super().from_pretrained(model_id, export=export, **kwargs)   # raises the family error
        return cls.task_class.from_pretrained(Path(path), export=export, **kwargs)


class NPUAutoModelForFeatureExtraction(_NPUAutoEncoder):
    task_class = modeling.NPUModelForFeatureExtraction


class NPUAutoModelForSequenceClassification(_NPUAutoEncoder):
    task_class = modeling.NPUModelForSequenceClassification


class NPUAutoModelForMaskedLM(_NPUAutoEncoder):
    task_class = modeling.NPUModelForMaskedLM


class NPUAutoModelForQuestionAnswering(_NPUAutoEncoder):
    task_class = modeling.NPUModelForQuestionAnswering


class NPUAutoModelForTokenClassification(_NPUAutoEncoder):
    task_class = modeling.NPUModelForTokenClassification


class NPUAutoModelForImageClassification(_NPUAutoEncoder):
    task_class = modeling.NPUModelForImageClassification


class NPUAutoModelForCTC(_NPUAutoEncoder):
    task_class = modeling.NPUModelForCTC
