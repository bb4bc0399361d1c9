"""Task auto classes of the seq2seq family: they accept seq2seq checkpoints and artifacts only."""

from __future__ import annotations

import os
from pathlib import Path

from optimum_npu.models.auto import NPUAutoModel, family_of
from optimum_npu.models.base import HUB_KWARGS
from optimum_npu.models.seq2seq.modeling import NPUModelForSeq2SeqLM
from optimum_npu.models.seq2seq.speech import NPUModelForSpeechSeq2Seq


class NPUAutoModelForSeq2SeqLM(NPUAutoModel):
    """Encoder-decoder LMs (T5, BART); a Whisper artifact loads as ``NPUModelForSpeechSeq2Seq``."""

    families = ("seq2seq",)
    task_class: type = NPUModelForSeq2SeqLM

    @classmethod
    def from_pretrained(cls, model_id: str | os.PathLike, *, export: bool = False, **kwargs):
        """As ``NPUAutoModel.from_pretrained``, refusing any other family, with this task's class."""
        path, family = family_of(model_id, {k: kwargs[k] for k in HUB_KWARGS if k in kwargs})
        if family is None or family.name != "seq2seq":
            return super().from_pretrained(model_id, export=export, **kwargs)   # raises the family error
        return cls.task_class.from_pretrained(Path(path), export=export, **kwargs)


class NPUAutoModelForSpeechSeq2Seq(NPUAutoModelForSeq2SeqLM):
    """Speech recognition (Whisper); refuses text-only encoder-decoder models."""

    task_class = NPUModelForSpeechSeq2Seq
