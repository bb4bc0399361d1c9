"""One registry of supported architectures, keyed by the HF ``architectures`` name.

Adding a decoder architecture is one ``DecoderAdapter`` (``models/adapters/``), one line here
and one parity test; its HF modules are reused as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PretrainedConfig

from optimum_npu.models.adapters.gemma2 import GEMMA2
from optimum_npu.models.adapters.gemma3 import GEMMA3
from optimum_npu.models.adapters.gpt2 import GPT2
from optimum_npu.models.adapters.llama import LLAMA
from optimum_npu.models.adapters.moe import GPT_OSS, MIXTRAL, QWEN2_MOE, QWEN3_MOE
from optimum_npu.models.adapters.opt import OPT
from optimum_npu.models.adapters.phi import PHI
from optimum_npu.models.adapters.phi3 import PHI3
from optimum_npu.models.adapters.qwen_vl import QWEN_VL
from optimum_npu.models.adapters.spec import DecoderAdapter

#: The NPU class of each family, named in errors when a checkpoint reaches another family's class (names only:
#: this module cannot import the classes; ``tests/test_family_registry.py`` checks them against the registry).
FAMILY_CLASSES = {"decoder": "NPUModelForCausalLM", "vlm": "NPUModelForImageTextToText", "encoder": "NPUEncoderModel"}
FAMILY_TITLES = {"decoder": "decoder-only language", "vlm": "vision-language", "encoder": "encoder (BERT-like)"}
#: Class-name endings of the HF classes that carry a language-model head.
_HEAD_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


@dataclass(frozen=True)
class Architecture:
    """One supported HF architecture.

    Attributes:
        name: HF class name (``config.architectures[0]``).
        family: the optimum-npu model family that compiles it (a key of ``models/families.py``).
        adapter: how the static decoder reads its text model (module paths, layout, TP split).
    """

    name: str
    family: str
    adapter: DecoderAdapter = LLAMA

    @property
    def text_model(self) -> str:
        """Path of the text decoder inside the HF model."""
        return self.adapter.text_model

    @property
    def mrope(self) -> bool:
        """The rotary embedding takes 3-D positions; the prefill graph merges visual embeddings (Qwen-VL)."""
        return self.adapter.positions.mrope


_ARCHITECTURES = (
    Architecture("LlamaForCausalLM", "decoder"),
    Architecture("MistralForCausalLM", "decoder"),
    Architecture("Qwen2ForCausalLM", "decoder"),
    Architecture("Qwen3ForCausalLM", "decoder"),
    Architecture("Gemma3ForCausalLM", "decoder", GEMMA3),
    Architecture("Qwen2VLForConditionalGeneration", "vlm", QWEN_VL),
    Architecture("Qwen2_5_VLForConditionalGeneration", "vlm", QWEN_VL),
    Architecture("Qwen3VLForConditionalGeneration", "vlm", QWEN_VL),
    Architecture("GemmaForCausalLM", "decoder"),
    Architecture("Gemma2ForCausalLM", "decoder", GEMMA2),
    Architecture("Phi3ForCausalLM", "decoder", PHI3),
    Architecture("PhiForCausalLM", "decoder", PHI),
    Architecture("GPT2LMHeadModel", "decoder", GPT2),
    Architecture("OPTForCausalLM", "decoder", OPT),
    Architecture("MixtralForCausalLM", "decoder", MIXTRAL),
    Architecture("Qwen2MoeForCausalLM", "decoder", QWEN2_MOE),
    Architecture("Qwen3MoeForCausalLM", "decoder", QWEN3_MOE),
)
REGISTRY: dict[str, Architecture] = {arch.name: arch for arch in _ARCHITECTURES}


def supported_architectures(family: str | None = None) -> list[str]:
    return sorted(name for name, arch in REGISTRY.items() if family in (None, arch.family))


def adapter_for(config: PretrainedConfig) -> DecoderAdapter:
    """The adapter of a config's registered architecture (the Llama layout when none is registered)."""
    for name in config.architectures or []:
        if name in REGISTRY:
            return REGISTRY[name].adapter
    return LLAMA


def _headless_hint(name: str) -> str:
    """For a ``...Model`` class without an LM head: the registered class to export instead."""
    if not name.endswith("Model") or name.endswith(_HEAD_SUFFIXES):
        return ""
    stem = name.removesuffix("Model")
    with_head = [n for n in REGISTRY if n.removeprefix(stem) in _HEAD_SUFFIXES and n.startswith(stem)]
    target = f"export {with_head[0]}" if with_head else "export its *ForCausalLM class"
    return (f"{name} has no language-model head: {target} (a decoder's hidden states are not compiled on their own; "
            "feature extraction is compiled for encoder checkpoints such as BERT with NPUModelForFeatureExtraction); ")


def lookup_architecture(config: PretrainedConfig, family: str) -> Architecture:
    """The registry entry for an HF config, or a ValueError listing what is supported."""
    names = list(config.architectures or [])
    for name in names:
        arch = REGISTRY.get(name)
        if arch is not None and arch.family == family:
            return arch
    hint = "".join(_headless_hint(name) for name in names)
    other = next((REGISTRY[name] for name in names if name in REGISTRY), None)
    if other is not None:
        owner = FAMILY_CLASSES.get(other.family, "NPUAutoModel")
        raise ValueError(f"architecture {other.name} is a {FAMILY_TITLES.get(other.family, other.family)} model, not "
                         f"supported by optimum-npu's {family} path: load or export it with {owner} (or NPUAutoModel, "
                         "which picks the class from the checkpoint)")
    shown = names or [f"(no 'architectures' in config.json, model_type={config.model_type!r})"]
    raise ValueError(
        f"{hint}architecture {', '.join(shown)} is not supported by optimum-npu's {family} path; "
        f"supported: {', '.join(supported_architectures(family))}"
    )

# ---- the encoder family (models/encoder/): BERT, RoBERTa, XLM-R, DistilBERT per task ------------------
_ENCODER_ARCHITECTURES = tuple(
    Architecture(stem + suffix, "encoder")
    for stem in ("Bert", "Roberta", "XLMRoberta", "DistilBert")
    for suffix in ("Model", "ForSequenceClassification", "ForMaskedLM", "ForQuestionAnswering", "ForTokenClassification"))
REGISTRY.update({arch.name: arch for arch in _ENCODER_ARCHITECTURES})

# ---- the seq2seq family (models/seq2seq/): encoder-decoder LMs and speech recognition ------------------
FAMILY_CLASSES["seq2seq"] = "NPUModelForSeq2SeqLM"
FAMILY_TITLES["seq2seq"] = "encoder-decoder"
REGISTRY.update({name: Architecture(name, "seq2seq") for name in (
    "T5ForConditionalGeneration", "BartForConditionalGeneration", "WhisperForConditionalGeneration",
    "PegasusForConditionalGeneration")})
# ---- vision encoders (models/encoder/: ViT, ResNet image classification) --------------------------------
REGISTRY.update({name: Architecture(name, "encoder") for name in ("ViTForImageClassification",
                                                                   "ResNetForImageClassification",
                                                                   "CLIPTextModelWithProjection",
                                                                   "CLIPVisionModelWithProjection",
                                                                   "Wav2Vec2ForCTC")})
# ---- CLIP (models/clip/: text and vision towers of the encoder family in one artifact) -------------------
REGISTRY["CLIPModel"] = Architecture("CLIPModel", "clip")
FAMILY_CLASSES["clip"] = "NPUCLIPModel"
FAMILY_TITLES["clip"] = "CLIP (contrastive image-text)"
# ---- the diffusion family (models/diffusion/): Diffusers pipelines, recognised by model_index.json ---------------
FAMILY_CLASSES["diffusion"] = "NPUAutoPipelineForText2Image"
FAMILY_TITLES["diffusion"] = "Diffusers pipeline"
# ---- mixture of experts (models/adapters/moe.py): gpt-oss ------------------------------------------------
REGISTRY["GptOssForCausalLM"] = Architecture("GptOssForCausalLM", "decoder", GPT_OSS)
# ---- Diffusers components (models/diffusion/component_family.py): one family per component kind -------------
FAMILY_CLASSES.update({"diffusion_unet": "NPUUNet2DConditionModel", "diffusion_transformer": "NPUSD3Transformer2DModel",
                       "diffusion_vae": "NPUAutoencoderKL", "diffusion_text_encoder": "NPUDiffusionTextEncoder"})
FAMILY_TITLES.update({"diffusion_unet": "Diffusers UNet", "diffusion_transformer": "Diffusers SD3 transformer",
                      "diffusion_vae": "Diffusers VAE", "diffusion_text_encoder": "Diffusers pipeline text encoder"})
