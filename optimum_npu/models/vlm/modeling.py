"""``NPUModelForImageTextToText``: a Qwen-VL model compiled as two submodules of one artifact.

``visual/`` holds the vision encoder compiled per patch bucket; ``language_model/`` holds
the decoder (prefill graph that merges the visual embeddings into the token embeddings and,
for Qwen3-VL, adds the DeepStack features after the first decoder layers; M-RoPE positions;
decode graphs per batch bucket). ``generate()`` takes what the HF model
takes: ``input_ids``, ``attention_mask``, ``pixel_values``, ``image_grid_thw``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForImageTextToText, GenerationConfig, PreTrainedModel

from optimum_npu.compile.artifact import verify_artifact, write_atomically
from optimum_npu.device.spec import NPUSpec, resolve_spec
from optimum_npu.models.decoder.export import TOKENIZER_FILES, compile_decoder
from optimum_npu.models.decoder.modeling import NPUModelForCausalLM
from optimum_npu.models.decoder.npu_config import NPUConfigError, NPUDecoderConfig
from optimum_npu.models.decoder.runtime import DecoderRuntime
from optimum_npu.models.model_config import DecoderModelConfig
from optimum_npu.models.registry import lookup_architecture
from optimum_npu.models.vlm.npu_config import NPUVLMConfig
from optimum_npu.models.vlm.rope_index import RopeIndex
from optimum_npu.models.vlm.visual_config import VisualModelConfig
from optimum_npu.models.vlm.visual_export import compile_visual
from optimum_npu.models.vlm.visual_runtime import VisualRuntime
from optimum_npu.schema import ARTIFACT_FORMAT_VERSION, MANIFEST_FILE, NPU_CONFIG_FILE
from optimum_npu.version import __version__

PROCESSOR_FILES = TOKENIZER_FILES + ("preprocessor_config.json", "processor_config.json",
                                     "video_preprocessor_config.json", "chat_template.json")
SUBMODULE_DIRS = {"visual": "visual", "language_model": "language_model"}


class NPUModelForImageTextToText(NPUModelForCausalLM):
    """A vision-language model (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) on the simulated NPU, with HF's ``generate()``.

    Each image runs on the smallest visual bucket that holds it; its embeddings replace the
    image tokens at prefill; decoding is the decoder path's (buckets, paged KV cache).
    ``npu_stats.visual`` reports the bucket of each image and the padding waste.
    """

    def __init__(self, config, runtime: DecoderRuntime, visual: VisualRuntime, artifact_dir: Path,
                 npu_config: NPUVLMConfig, generation_config: GenerationConfig | None = None):
        super().__init__(config, runtime, artifact_dir, npu_config, generation_config)
        self.visual = visual
        arch = lookup_architecture(config, "vlm")
        self.rope_index = RopeIndex(type(self)._hf_base_class(arch.name), config)
        self._rope_deltas: list[int] = []

    @staticmethod
    def _hf_base_class(architecture: str) -> type:
        import transformers

        return getattr(transformers, architecture.replace("ForConditionalGeneration", "Model"))

    @property
    def _decoder_config(self) -> NPUDecoderConfig:
        return self.npu_config.language_model

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def _export(cls, checkpoint: Path, npu_config: Any, compile_cache: Any = None):
        config = cls._resolve(AutoConfig.from_pretrained(checkpoint), npu_config)
        hf_model = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=torch.float32)
        return cls._compile_and_load(hf_model, config, checkpoint)

    @classmethod
    def from_model(cls, hf_model: PreTrainedModel, npu_config: Any = None, processor_dir: str | Path | None = None):
        """Compiles an in-memory HF Qwen-VL model (``processor_dir``: processor/tokenizer files to ship)."""
        config = cls._resolve(hf_model.config, npu_config)
        return cls._compile_and_load(hf_model, config, Path(processor_dir) if processor_dir else None)

    @staticmethod
    def _resolve(hf_config, npu_config: Any) -> NPUVLMConfig:
        lookup_architecture(hf_config, "vlm")
        config = NPUVLMConfig.coerce(npu_config)
        config.visual.check_model(VisualModelConfig.from_hf(hf_config))
        language = config.language_model.resolve(DecoderModelConfig.from_hf(hf_config))
        return dataclasses.replace(config, language_model=language)

    @classmethod
    def _compile_and_load(cls, hf_model, config: NPUVLMConfig, processor_dir: Path | None):
        arch = lookup_architecture(hf_model.config, "vlm")
        tmp, target = cls._new_artifact_dir()

        def fill(root: Path) -> None:
            compile_visual(hf_model, config.visual, root / SUBMODULE_DIRS["visual"])
            compile_decoder(hf_model, arch, config.language_model, root / SUBMODULE_DIRS["language_model"])
            (root / SUBMODULE_DIRS["language_model"] / MANIFEST_FILE).unlink()  # the top-level manifest covers it
            hf_model.config.save_pretrained(root)
            (hf_model.generation_config or GenerationConfig.from_model_config(hf_model.config)).save_pretrained(root)
            for name in PROCESSOR_FILES if processor_dir else ():
                if (processor_dir / name).is_file():
                    shutil.copy2(processor_dir / name, root / name)
            document = {"architecture": arch.name, "family": arch.family, **config.to_dict(),
                        "submodules": SUBMODULE_DIRS, "npu_spec": resolve_spec(config.npu).to_dict(),
                        "library_version": __version__, "format_version": ARTIFACT_FORMAT_VERSION}
            (root / NPU_CONFIG_FILE).write_text(json.dumps(document, indent=1))

        write_atomically(target, fill)
        model = cls._load(target, verify_artifact(target), None)
        model._tmp_dir = tmp
        return model

    @classmethod
    def _load(cls, root: Path, stored: dict, npu_config: Any):
        compiled = NPUVLMConfig.coerce({"visual": stored["visual"], "language_model": stored["language_model"],
                                        "npu": stored["npu"]})
        config = _apply_placement(compiled, npu_config)
        hf_config = AutoConfig.from_pretrained(root)
        spec = NPUSpec.from_dict(stored["npu_spec"], origin=f"{root}/{NPU_CONFIG_FILE}")
        language_root = root / stored["submodules"]["language_model"]
        graphs = json.loads((language_root / NPU_CONFIG_FILE).read_text())["graphs"]
        runtime = DecoderRuntime(language_root, config.language_model, DecoderModelConfig.from_hf(hf_config),
                                 spec, graphs)
        visual = VisualRuntime(root / stored["submodules"]["visual"], config.visual, spec,
                               list(config.visual_device), owner=f"{stored['architecture']} visual encoder")
        try:
            generation_config = GenerationConfig.from_pretrained(root)
        except OSError:
            generation_config = None
        return cls(hf_config, runtime, visual, root, config, generation_config)

    # ---- generation ---------------------------------------------------------------------------
    def _check_request(self, inputs, generation_config, kwargs: dict) -> None:
        super()._check_request(inputs, generation_config, kwargs)
        if kwargs.get("pixel_values") is not None:
            self.visual.check(kwargs["pixel_values"], kwargs["image_grid_thw"])

    def prepare_inputs_for_generation(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                                      is_first_iteration: bool = False, pixel_values=None, image_grid_thw=None,
                                      mm_token_type_ids=None, **kwargs) -> dict[str, Any]:
        inputs = super().prepare_inputs_for_generation(input_ids, attention_mask, is_first_iteration)
        if is_first_iteration:
            inputs.update(pixel_values=pixel_values, image_grid_thw=image_grid_thw,
                          mm_token_type_ids=mm_token_type_ids)
        return inputs

    def _prompt_extras(self, input_ids, attention_mask, keep, pixel_values=None, image_grid_thw=None,
                       mm_token_type_ids=None, **ignored) -> list[dict]:
        """Per row: M-RoPE positions, and the visual embeddings (and DeepStack features) at the image tokens."""
        if mm_token_type_ids is not None:
            mm_token_type_ids = mm_token_type_ids[:, -input_ids.shape[1]:]
        positions, deltas = self.rope_index(input_ids, attention_mask, image_grid_thw, None, mm_token_type_ids)
        self._rope_deltas = deltas.tolist()
        embeds = deepstack = None
        if pixel_values is not None:
            features = self.visual.encode_features(pixel_values, image_grid_thw)
            embeds, deepstack, self._visual_stats = features.embeds, features.deepstack, features.stats
        else:
            self._visual_stats = None
        deepstack_layers = DecoderModelConfig.from_hf(self.config).deepstack_layers
        extras, used = [], 0
        for row in range(input_ids.shape[0]):
            ids = input_ids[row][keep[row]]
            is_image = ids == self.config.image_token_id
            hidden_size = self.config.get_text_config().hidden_size
            visual_embeds = torch.zeros(len(ids), hidden_size)
            deepstack_embeds = torch.zeros(deepstack_layers, len(ids), hidden_size)
            count = int(is_image.sum())
            if count:
                if embeds is None or used + count > embeds.shape[0]:
                    raise ValueError("the prompt has more image tokens than the images in pixel_values produce; "
                                     "pass the processor's input_ids, pixel_values and image_grid_thw together")
                visual_embeds[is_image] = embeds[used:used + count].float()
                if deepstack_layers:
                    deepstack_embeds[:, is_image] = deepstack[:, used:used + count].float()
                used += count
            extras.append({"rope_positions": positions[:, row][:, keep[row]], "visual_embeds": visual_embeds,
                           "visual_mask": is_image})
            if deepstack_layers:
                extras[-1]["deepstack_embeds"] = deepstack_embeds
        return extras

    def _prefill_prompts(self, input_ids, attention_mask, **inputs) -> torch.Tensor:
        logits = super()._prefill_prompts(input_ids, attention_mask, **inputs)
        self._runtime.stats.visual = self._visual_stats
        return logits

    def _decode_rope_positions(self, lengths: list[int]) -> list[int]:
        return [length + delta for length, delta in zip(lengths, self._rope_deltas)]

    def release(self) -> None:
        """Frees both submodules' memory on their devices."""
        super().release()
        self.visual.release()


def _apply_placement(compiled: NPUVLMConfig, requested: Any) -> NPUVLMConfig:
    """Load-time options: only placement (``device_map`` / each submodule's ``device``) may change."""
    if requested is None:
        return compiled
    if not isinstance(requested, dict):
        raise NPUConfigError("at load time npu_config takes placement only, as a dict: "
                             "{'device_map': {'visual': [0], 'language_model': [1, 2]}}")
    placement = NPUVLMConfig.coerce({**compiled.to_dict(), **requested,
                                     "visual": {**compiled.to_dict()["visual"], **requested.get("visual", {})},
                                     "language_model": {**compiled.language_model.to_dict(),
                                                        **requested.get("language_model", {})}})
    if placement.visual != compiled.visual or placement.language_model.compile_knobs() != \
            compiled.language_model.compile_knobs():
        raise NPUConfigError("compile knobs cannot change at load time (only device_map / device can): recompile "
                             "with from_pretrained(checkpoint, export=True, npu_config=...)")
    return placement
