"""The CLIP family: text and vision towers compiled as two encoder submodules of one artifact."""

from optimum_npu.models.clip.modeling import CLIPStats, NPUCLIPModel
from optimum_npu.models.clip.npu_config import NPUCLIPConfig

__all__ = ["NPUCLIPModel", "NPUCLIPConfig", "CLIPStats"]
