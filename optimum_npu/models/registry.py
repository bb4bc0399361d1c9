"""One registry of supported architectures, keyed by the HF ``architectures`` name.

Adding a decoder architecture that follows the shared pre-norm block is one entry
here plus a parity test; its HF modules are reused as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PretrainedConfig


@dataclass(frozen=True)
class Architecture:
    """How the shared decoder path reads one HF architecture.

    Attributes:
        name: HF class name (``config.architectures[0]``).
        family: the optimum-npu model family that compiles it (``decoder``).
        qk_norm: the attention applies RMSNorm per head to queries and keys (Qwen3, Gemma 3).
        block: the decoder layer layout, ``pre_norm`` (Llama) or ``sandwich_norm`` (Gemma 3:
            norms before and after both attention and MLP).
        rope_per_layer_type: the rotary embedding takes the layer type (Gemma 3: local and
            global layers use different bases).
        text_model: attribute path of the text decoder (embeddings, layers, norm, rotary)
            inside the HF model.
        mrope: the rotary embedding takes 3-D (temporal, height, width) positions (Qwen-VL);
            the prefill graph then also merges visual embeddings into the token embeddings
            (and, for a config with ``vision_config.deepstack_visual_indexes``, adds the DeepStack
            features after the first decoder layers: ``DecoderModelConfig.deepstack_layers``).
    """

    name: str
    family: str
    qk_norm: bool = False
    block: str = "pre_norm"
    rope_per_layer_type: bool = False
    text_model: str = "model"
    mrope: bool = False


_ARCHITECTURES = (
    Architecture("LlamaForCausalLM", "decoder"),
    Architecture("MistralForCausalLM", "decoder"),
    Architecture("Qwen2ForCausalLM", "decoder"),
    Architecture("Qwen3ForCausalLM", "decoder", qk_norm=True),
    Architecture("Gemma3ForCausalLM", "decoder", qk_norm=True, block="sandwich_norm", rope_per_layer_type=True),
    Architecture("Qwen2VLForConditionalGeneration", "vlm", text_model="model.language_model", mrope=True),
    Architecture("Qwen2_5_VLForConditionalGeneration", "vlm", text_model="model.language_model", mrope=True),
    Architecture("Qwen3VLForConditionalGeneration", "vlm", qk_norm=True, text_model="model.language_model",
                 mrope=True),
)
REGISTRY: dict[str, Architecture] = {arch.name: arch for arch in _ARCHITECTURES}


def supported_architectures(family: str | None = None) -> list[str]:
    return sorted(name for name, arch in REGISTRY.items() if family in (None, arch.family))


def lookup_architecture(config: PretrainedConfig, family: str) -> Architecture:
    """The registry entry for an HF config, or a ValueError listing what is supported."""
    names = list(config.architectures or [])
    for name in names:
        arch = REGISTRY.get(name)
        if arch is not None and arch.family == family:
            return arch
    shown = names or [f"(no 'architectures' in config.json, model_type={config.model_type!r})"]
    raise ValueError(
        f"architecture {', '.join(shown)} is not supported by optimum-npu's {family} path; "
        f"supported: {', '.join(supported_architectures(family))}"
    )
