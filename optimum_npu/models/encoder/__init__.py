"""The encoder family: BERT-style encoders per task and vision encoders (ViT, ResNet), compiled into a grid of
(batch x length) buckets."""

from optimum_npu.models.encoder.modeling import (NPUEncoderModel, NPUModelForFeatureExtraction,
                                                 NPUModelForImageClassification, NPUModelForMaskedLM,
                                                 NPUModelForQuestionAnswering, NPUModelForSequenceClassification,
                                                 NPUModelForTokenClassification)
from optimum_npu.models.encoder.npu_config import NPUEncoderConfig
from optimum_npu.models.encoder.runtime import EncoderInputError, EncoderStats

__all__ = ["NPUEncoderModel", "NPUModelForFeatureExtraction", "NPUModelForSequenceClassification", "NPUModelForMaskedLM",
           "NPUModelForQuestionAnswering", "NPUModelForTokenClassification", "NPUModelForImageClassification", "NPUEncoderConfig", "EncoderInputError",
           "EncoderStats"]
