"""optimum-npu: compile Hugging Face models into bucketed static-shape artifacts and run them
on a simulated multi-device NPU that reports memory, time per phase and fit.

The public names below are imported on first use (``from optimum_npu import NPUModelForCausalLM``
works as usual), so that ``optimum-npu --help`` and other light entry points do not load torch.
"""

from __future__ import annotations

from optimum_npu.lazy import lazy_exports
from optimum_npu.version import __version__

#: Public name -> the module that defines it (a fixed table: nothing here comes from outside).
_EXPORTS = {
    "ArtifactError": "optimum_npu.compile.artifact",
    "SaveTargetError": "optimum_npu.compile.artifact_write",
    "DeviceOutOfMemoryError": "optimum_npu.device.memory",
    "PRESETS": "optimum_npu.device.spec",
    "NPUSpec": "optimum_npu.device.spec",
    "NPUAutoModel": "optimum_npu.models.auto",
    "NPUAutoModelForCausalLM": "optimum_npu.models.auto",
    "NPUAutoModelForImageTextToText": "optimum_npu.models.auto",
    "NPUConfigError": "optimum_npu.models.decoder.npu_config",
    "NPUDecoderConfig": "optimum_npu.models.decoder.npu_config",
    "NPUModelForCausalLM": "optimum_npu.models.decoder.modeling",
    "push_artifact": "optimum_npu.models.publish",
    "NPUModelForImageTextToText": "optimum_npu.models.vlm.modeling",
    "NPUVLMConfig": "optimum_npu.models.vlm.npu_config",
    "NPUEncoderModel": "optimum_npu.models.encoder",
    "NPUEncoderConfig": "optimum_npu.models.encoder",
    "NPUModelForFeatureExtraction": "optimum_npu.models.encoder",
    "NPUModelForSequenceClassification": "optimum_npu.models.encoder",
    "NPUModelForMaskedLM": "optimum_npu.models.encoder",
    "NPUModelForQuestionAnswering": "optimum_npu.models.encoder",
    "NPUModelForTokenClassification": "optimum_npu.models.encoder",
    "NPUAutoModelForFeatureExtraction": "optimum_npu.models.encoder.auto",
    "NPUAutoModelForSequenceClassification": "optimum_npu.models.encoder.auto",
    "NPUAutoModelForMaskedLM": "optimum_npu.models.encoder.auto",
    "NPUAutoModelForQuestionAnswering": "optimum_npu.models.encoder.auto",
    "NPUAutoModelForTokenClassification": "optimum_npu.models.encoder.auto",
    "LLM": "optimum_npu.serving",
    "SamplingParams": "optimum_npu.serving",
    # seq2seq family: T5, BART, Whisper
    "NPUModelForSeq2SeqLM": "optimum_npu.models.seq2seq",
    "NPUModelForSpeechSeq2Seq": "optimum_npu.models.seq2seq",
    "NPUSeq2SeqConfig": "optimum_npu.models.seq2seq",
    "NPUAutoModelForSeq2SeqLM": "optimum_npu.models.seq2seq.auto",
    "NPUAutoModelForSpeechSeq2Seq": "optimum_npu.models.seq2seq.auto",
    # diffusion family (Diffusers pipelines)
    "NPUStableDiffusionPipeline": "optimum_npu.models.diffusion.pipelines",
    "NPUStableDiffusionImg2ImgPipeline": "optimum_npu.models.diffusion.pipelines",
    "NPUStableDiffusionInpaintPipeline": "optimum_npu.models.diffusion.pipelines",
    "NPUStableDiffusionXLPipeline": "optimum_npu.models.diffusion.pipelines",
    "NPUStableDiffusionXLImg2ImgPipeline": "optimum_npu.models.diffusion.pipelines",
    "NPUStableDiffusionXLInpaintPipeline": "optimum_npu.models.diffusion.pipelines",
    "NPUStableDiffusion3Pipeline": "optimum_npu.models.diffusion.pipelines",
    "NPUStableDiffusion3Img2ImgPipeline": "optimum_npu.models.diffusion.pipelines",
    "NPUStableDiffusion3InpaintPipeline": "optimum_npu.models.diffusion.pipelines",
    "NPUAutoPipelineForText2Image": "optimum_npu.models.diffusion.auto",
    "NPUAutoPipelineForImage2Image": "optimum_npu.models.diffusion.auto",
    "NPUAutoPipelineForInpainting": "optimum_npu.models.diffusion.auto",
    "NPUDiffusionConfig": "optimum_npu.models.diffusion.npu_config",
    # vision and speech encoders, CLIP (models/encoder, models/clip)
    "NPUModelForImageClassification": "optimum_npu.models.encoder",
    "NPUAutoModelForImageClassification": "optimum_npu.models.encoder.auto",
    "NPUCLIPModel": "optimum_npu.models.clip",
    "NPUCLIPConfig": "optimum_npu.models.clip",
    "NPUCLIPTextModel": "optimum_npu.models.encoder.modeling",
    "NPUCLIPVisionModel": "optimum_npu.models.encoder.modeling",
    "NPUModelForCTC": "optimum_npu.models.encoder.modeling",
    "NPUAutoModelForCTC": "optimum_npu.models.encoder.auto",
    # Diffusers components compiled alone (models/diffusion/component_models.py) and their configs
    **{name: "optimum_npu.models.diffusion.component_models" for name in (
        "NPUUNet2DConditionModel", "NPUSD3Transformer2DModel", "NPUAutoencoderKL", "NPUDiffusionTextEncoder",
        "NPUDiffusionCLIPTextModel", "NPUDiffusionCLIPTextModelWithProjection", "NPUT5EncoderModel")},
    **{name: "optimum_npu.models.diffusion.component_config" for name in (
        "NPUDenoiserConfig", "NPUVAEConfig", "NPUTextEncoderConfig")},
}

__all__ = [*_EXPORTS, "__version__"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
