"""The seq2seq family: encoder-decoder LMs (T5, BART) and speech recognition (Whisper)."""

from optimum_npu.models.seq2seq.modeling import NPUModelForSeq2SeqLM
from optimum_npu.models.seq2seq.npu_config import NPUSeq2SeqConfig
from optimum_npu.models.seq2seq.speech import NPUModelForSpeechSeq2Seq

__all__ = ["NPUModelForSeq2SeqLM", "NPUModelForSpeechSeq2Seq", "NPUSeq2SeqConfig"]
