"""optimum-npu: compile Hugging Face models into bucketed static-shape artifacts and run them
on a simulated multi-device NPU that reports memory, time per phase and fit."""

from optimum_npu.compile.artifact import ArtifactError, SaveTargetError
from optimum_npu.device.memory import DeviceOutOfMemoryError
from optimum_npu.device.spec import PRESETS, NPUSpec
from optimum_npu.models.auto import NPUAutoModel, NPUAutoModelForCausalLM, NPUAutoModelForImageTextToText
from optimum_npu.models.decoder import NPUConfigError, NPUDecoderConfig, NPUModelForCausalLM
from optimum_npu.models.encoder import (NPUEncoderConfig, NPUEncoderModel, NPUModelForFeatureExtraction,
                                        NPUModelForMaskedLM, NPUModelForQuestionAnswering,
                                        NPUModelForSequenceClassification, NPUModelForTokenClassification)
from optimum_npu.models.encoder.auto import (NPUAutoModelForFeatureExtraction, NPUAutoModelForMaskedLM,
                                             NPUAutoModelForQuestionAnswering, NPUAutoModelForSequenceClassification,
                                             NPUAutoModelForTokenClassification)
from optimum_npu.models.publish import push_artifact
from optimum_npu.models.vlm.modeling import NPUModelForImageTextToText
from optimum_npu.models.vlm.npu_config import NPUVLMConfig
from optimum_npu.version import __version__

__all__ = ["NPUModelForCausalLM", "NPUModelForImageTextToText", "NPUAutoModel", "NPUAutoModelForCausalLM",
           "NPUAutoModelForImageTextToText", "NPUVLMConfig", "NPUDecoderConfig", "NPUConfigError", "NPUSpec", "PRESETS",
           "ArtifactError", "SaveTargetError", "NPUEncoderModel", "NPUEncoderConfig", "NPUModelForFeatureExtraction",
           "NPUModelForSequenceClassification", "NPUModelForMaskedLM", "NPUModelForQuestionAnswering",
           "NPUModelForTokenClassification", "NPUAutoModelForFeatureExtraction", "NPUAutoModelForSequenceClassification",
           "NPUAutoModelForMaskedLM", "NPUAutoModelForQuestionAnswering", "NPUAutoModelForTokenClassification",
           "DeviceOutOfMemoryError", "push_artifact", "__version__"]
