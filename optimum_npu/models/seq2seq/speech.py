"""``NPUModelForSpeechSeq2Seq``: Whisper compiled into encoder graphs (one per batch bucket of its fixed mel window)
and the seq2seq decoder graphs, with Whisper's own generate() (language and task tokens, timestamps, token
timestamps when compiled with ``token_timestamps``, long-form) and the automatic-speech-recognition pipeline."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
from transformers import AutoModelForSpeechSeq2Seq
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.auto.modeling_auto import MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES
from transformers.models.whisper.generation_whisper import WhisperGenerationMixin

from optimum_npu.hub.card import CardSection
from optimum_npu.models.hf_compat import register_for_pipeline
from optimum_npu.models.seq2seq.alignment import compiled_alignment_heads, pop_token_timestamps
from optimum_npu.models.seq2seq.modeling import ARCHITECTURE_CLASSES, NPUModelForSeq2SeqLM
from optimum_npu.models.seq2seq.npu_config import RUNTIME_OPTIONS

#: Whisper's two encoder convolutions (kernel 3): strides 1 and 2, so an encoder position is 2 mel frames.
CONV_STRIDES = (1, 2)


class _NPUAudioEncoder:
    """What ``get_encoder()`` gives Whisper's generate(): the encoder graphs behind an HF signature."""

    def __init__(self, owner: "NPUModelForSpeechSeq2Seq"):
        self._owner = owner

    def forward(self, input_features: torch.Tensor, attention_mask: torch.Tensor | None = None,
                return_dict: bool = True, output_attentions: bool = False,
                output_hidden_states: bool = False) -> BaseModelOutput:
        if output_hidden_states or (output_attentions and not self._owner._token_timestamps_call):
            raise ValueError("output_attentions / output_hidden_states: the compiled encoder returns its last "
                             "hidden state only; leave them out")
        return BaseModelOutput(last_hidden_state=self._owner._runtime.encode_audio(input_features))

    __call__ = forward


class NPUModelForSpeechSeq2Seq(WhisperGenerationMixin, NPUModelForSeq2SeqLM):
    """Whisper on the simulated NPU. ``generate()`` is Whisper's (``language=``, ``task=``, ``return_timestamps=``,
    long-form audio by 30-s segments), each segment encoded on the encoder graphs and decoded on the paged pool."""

    main_input_name = "input_features"
    hf_auto_class = AutoModelForSpeechSeq2Seq

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._encoder = _NPUAudioEncoder(self)
        self._token_timestamps_call = False

    @classmethod
    def _pop_compile_extras(cls, npu_config: Any) -> tuple[Any, bool]:
        return pop_token_timestamps(npu_config)

    @classmethod
    def _alignment_heads_for(cls, hf_model, extras: bool) -> tuple:
        return compiled_alignment_heads(hf_model) if extras else ()

    @property
    def model(self) -> SimpleNamespace:
        """The encoder facts Whisper's generate() reads from the HF model (its convolution strides)."""
        convs = [SimpleNamespace(stride=(stride,)) for stride in CONV_STRIDES]
        return SimpleNamespace(encoder=SimpleNamespace(conv1=convs[0], conv2=convs[1]), config=self.config)

    def _cross_mask(self, attention_mask: torch.Tensor | None) -> None:
        return None   # the mel window is always whole (its attention_mask counts frames, not encoder positions)

    @classmethod
    def card_section(cls, repo_id: str) -> CardSection:
        usage = ("## Use\n\n```python\nfrom transformers import pipeline\n"
                 f"from optimum_npu import {cls.__name__}\n\n"
                 f'model = {cls.__name__}.from_pretrained("{repo_id}")   # verified against npu_manifest.json\n'
                 f'asr = pipeline("automatic-speech-recognition", model=model, tokenizer="{repo_id}", '
                 f'feature_extractor="{repo_id}")\nprint(asr("speech.wav"))\n```')
        return CardSection("automatic-speech-recognition", usage, RUNTIME_OPTIONS)

    def generate(self, input_features: torch.Tensor | None = None, *args, return_token_timestamps: bool | None = None,
                 **kwargs):
        """Whisper's ``generate()`` on the compiled graphs. ``return_token_timestamps=True`` needs an artifact compiled
        with ``npu_config={"token_timestamps": True}``: its graphs return the alignment heads' cross-attention, given
        to Whisper's dynamic time warping as ``cross_attentions`` (the other heads are NaN there)."""
        if not return_token_timestamps:
            return super().generate(input_features, *args, **kwargs)
        self._runtime.require_alignment_heads()
        config = kwargs.get("generation_config") or self.generation_config
        wanted = [tuple(pair) for pair in getattr(config, "alignment_heads", None) or []]
        missing = sorted(set(wanted) - set(self._runtime.facts.alignment_heads))
        if missing:
            raise ValueError(f"generation_config.alignment_heads asks for heads {missing} but the graphs were compiled "
                             f"with alignment_heads={[list(p) for p in self._runtime.facts.alignment_heads]}; use "
                             "those or recompile with npu_config={'token_timestamps': True} after setting them")
        self._token_timestamps_call = True
        try:
            return super().generate(input_features, *args, return_token_timestamps=True, **kwargs)
        finally:
            self._token_timestamps_call = False

    def _check_request(self, inputs, generation_config, kwargs: dict[str, Any]) -> None:
        if inputs is None and "encoder_outputs" in kwargs:
            inputs = kwargs["encoder_outputs"][0]
        super()._check_request(inputs, generation_config, kwargs)


ARCHITECTURE_CLASSES["WhisperForConditionalGeneration"] = NPUModelForSpeechSeq2Seq
register_for_pipeline(NPUModelForSpeechSeq2Seq, MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES)
