"""The encoder family: BERT-style encoders per task, vision encoders (ViT, ResNet, CLIP towers) and Wav2Vec2 CTC,
compiled into a grid of (batch x length) buckets."""

from optimum_npu.models.encoder.modeling import (NPUEncoderModel, NPUModelForFeatureExtraction,
                                                 NPUModelForCTC, NPUModelForImageClassification,
                                                 NPUModelForMaskedLM,
                                                 NPUModelForQuestionAnswering, NPUModelForSequenceClassification,
                                                 NPUModelForTokenClassification)
from optimum_npu.models.encoder.npu_config import NPUEncoderConfig
from optimum_npu.models.encoder.runtime import EncoderInputError, EncoderStats

__all__ = ["NPUEncoderModel", "NPUModelForFeatureExtraction", "NPUModelForSequenceClassification",
           "NPUModelForMaskedLM", "NPUModelForQuestionAnswering", "NPUModelForTokenClassification",
           "NPUModelForImageClassification", "NPUModelForCTC", "NPUEncoderConfig", "EncoderInputError", "EncoderStats"]
