"""Encoder tasks as data: which HF auto class builds the model and which of its outputs the graphs return.

One ``EncoderTask`` per task; the NPU classes (``modeling.py``) differ only by the task they carry.
Names here are constants of the library: a task named in an artifact is looked up in ``TASKS``
(untrusted strings never become attribute lookups).
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import (AutoModel, AutoModelForCTC, AutoModelForImageClassification, AutoModelForMaskedLM,
                          AutoModelForQuestionAnswering, AutoModelForSequenceClassification,
                          AutoModelForTokenClassification, CLIPTextModelWithProjection,
                          CLIPVisionModelWithProjection)
from transformers.modeling_outputs import (BaseModelOutputWithPooling, CausalLMOutput, ImageClassifierOutput,
                                           MaskedLMOutput,
                                           QuestionAnsweringModelOutput, SequenceClassifierOutput,
                                           TokenClassifierOutput)
from transformers.models.clip.modeling_clip import CLIPTextModelOutput, CLIPVisionModelOutput


@dataclass(frozen=True)
class EncoderTask:
    """One encoder task.

    Attributes:
        name: the task name stored in ``npu_config.json`` (``feature-extraction``...).
        auto_class: the Transformers auto class that builds the HF model for it.
        outputs: the output fields the graphs may return, in order (a model without a pooler leaves
            ``pooler_output`` out).
        token_outputs: the outputs with one row per token ([batch, tokens, ...]); the others have one
            row per sequence ([batch, ...]).
        output_class: the Transformers output class ``forward`` returns.
        architecture_suffix: the ending of the HF class names of this task (``ForMaskedLM``); ``Model``
            for the bare encoder.
        pipeline_tag: the Hub pipeline tag of its artifacts.
        modality: what its graphs take: ``text`` (token ids), ``image`` (pixels) or ``audio`` (waveforms); a key
            of ``STEMS``.
        stems: the model class stems of the task when they are not its modality's (the CLIP towers).
        causal: text attends causally (each token to itself and earlier tokens) besides the padding mask.
    """

    name: str
    auto_class: type
    outputs: tuple[str, ...]
    token_outputs: frozenset[str]
    output_class: type
    architecture_suffix: str
    pipeline_tag: str
    modality: str = "text"
    stems: tuple[str, ...] = ()
    causal: bool = False


FEATURE_EXTRACTION = EncoderTask("feature-extraction", AutoModel, ("last_hidden_state", "pooler_output"),
                                 frozenset({"last_hidden_state"}), BaseModelOutputWithPooling, "Model",
                                 "feature-extraction")
SEQUENCE_CLASSIFICATION = EncoderTask("sequence-classification", AutoModelForSequenceClassification, ("logits",),
                                      frozenset(), SequenceClassifierOutput, "ForSequenceClassification",
                                      "text-classification")
MASKED_LM = EncoderTask("fill-mask", AutoModelForMaskedLM, ("logits",), frozenset({"logits"}), MaskedLMOutput,
                        "ForMaskedLM", "fill-mask")
QUESTION_ANSWERING = EncoderTask("question-answering", AutoModelForQuestionAnswering, ("start_logits", "end_logits"),
                                 frozenset({"start_logits", "end_logits"}), QuestionAnsweringModelOutput,
                                 "ForQuestionAnswering", "question-answering")
TOKEN_CLASSIFICATION = EncoderTask("token-classification", AutoModelForTokenClassification, ("logits",),
                                   frozenset({"logits"}), TokenClassifierOutput, "ForTokenClassification",
                                   "token-classification")

# vision encoders (ViT, ResNet)
IMAGE_CLASSIFICATION = EncoderTask("image-classification", AutoModelForImageClassification, ("logits",), frozenset(),
                                   ImageClassifierOutput, "ForImageClassification", "image-classification", "image")

# the two towers of CLIP (models/clip compiles both into one artifact; each also compiles alone)
TEXT_EMBEDDING = EncoderTask("text-embedding", CLIPTextModelWithProjection, ("text_embeds", "last_hidden_state"),
                             frozenset({"last_hidden_state"}), CLIPTextModelOutput, "TextModelWithProjection",
                             "feature-extraction", "text", stems=("CLIP",), causal=True)
IMAGE_EMBEDDING = EncoderTask("image-embedding", CLIPVisionModelWithProjection, ("image_embeds", "last_hidden_state"),
                              frozenset(), CLIPVisionModelOutput, "VisionModelWithProjection",
                              "image-feature-extraction", "image", stems=("CLIP",))
# speech recognition (Wav2Vec2): logits per audio frame, cut to the frames of the call's samples
CTC = EncoderTask("ctc", AutoModelForCTC, ("logits",), frozenset({"logits"}), CausalLMOutput, "ForCTC",
                  "automatic-speech-recognition", "audio")

TASKS: dict[str, EncoderTask] = {task.name: task for task in (FEATURE_EXTRACTION, SEQUENCE_CLASSIFICATION, MASKED_LM,
                                                              QUESTION_ANSWERING, TOKEN_CLASSIFICATION,
                                                              IMAGE_CLASSIFICATION, TEXT_EMBEDDING, IMAGE_EMBEDDING,
                                                              CTC)}

#: The encoder models compiled (HF ``model_type`` -> the stems of its class names).
ENCODER_STEMS = {"bert": "Bert", "roberta": "Roberta", "xlm-roberta": "XLMRoberta", "distilbert": "DistilBert"}
#: The vision encoders compiled (HF ``model_type`` -> the stem of its class names).
VISION_STEMS = {"vit": "ViT", "resnet": "ResNet"}
#: The class-name stems of each modality's models.
STEMS = {"text": tuple(ENCODER_STEMS.values()), "image": tuple(VISION_STEMS.values()), "audio": ("Wav2Vec2",)}


def task_of_architecture(name: str) -> EncoderTask:
    """The task of an HF class name (``BertForMaskedLM`` -> fill-mask); ValueError for no task's name."""
    for task in sorted(TASKS.values(), key=lambda t: -len(t.architecture_suffix)):
        stem = name.removesuffix(task.architecture_suffix)
        if stem != name and stem in (task.stems or STEMS[task.modality]):
            return task
    raise ValueError(f"{name!r} is not an encoder architecture optimum-npu compiles; supported: "
                     f"{', '.join(encoder_architectures())}")


def encoder_architectures() -> list[str]:
    """Every HF class name of the encoder family (the registry's entries)."""
    return [stem + task.architecture_suffix for task in TASKS.values() for stem in task.stems or STEMS[task.modality]]
