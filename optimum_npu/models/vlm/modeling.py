"""``NPUModelForImageTextToText``: a Qwen-VL model compiled as two submodules of one artifact.

``visual/`` holds the vision encoder compiled per patch bucket; ``language_model/`` holds
the decoder (prefill graph that merges the visual embeddings into the token embeddings and,
for Qwen3-VL, adds the DeepStack features after the first decoder layers; M-RoPE positions;
decode graphs per batch bucket). ``generate()`` takes what the HF model
takes: ``input_ids``, ``attention_mask``, ``pixel_values``, ``image_grid_thw``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForImageTextToText, GenerationConfig, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

from optimum_npu.compile.artifact import ArtifactError, graph_path, verify_artifact
from optimum_npu.device.device import DeviceRegistry
from optimum_npu.hub.card import CardSection
from optimum_npu.hub.cached_compile import compile_with_cache
from optimum_npu.models.decoder.artifact_files import (check_stored_architecture, read_generation_config,
                                                      read_hf_config, stored_model_config, stored_spec)
from optimum_npu.models.decoder.modeling import NPUModelForCausalLM
from optimum_npu.models.decoder.npu_config import RUNTIME_OPTIONS, NPUConfigError, NPUDecoderConfig
from optimum_npu.models.decoder.stored_config import (STORED_FIX, check_stored_config, config_from_stored, short_repr,
                                                      stored_knob_error)
from optimum_npu.models.decoder.runtime import DecoderRuntime
from optimum_npu.models.model_config import DecoderModelConfig
from optimum_npu.models.hf_compat import register_for_pipeline
from optimum_npu.models.registry import lookup_architecture
from optimum_npu.models.vlm.cache_key import vlm_cache_key
from optimum_npu.models.vlm.export import compile_vlm
from optimum_npu.models.vlm.files import SUBMODULE_DIRS
from optimum_npu.models.vlm.npu_config import NPUVLMConfig
from optimum_npu.models.vlm.rope_index import RopeIndex
from optimum_npu.models.vlm.visual_config import VisualConfigError, VisualModelConfig
from optimum_npu.models.vlm.visual_runtime import VisualRuntime
from optimum_npu.schema import MANIFEST_FILE, NPU_CONFIG_FILE
from optimum_npu.untrusted import expect_dict, load_json

#: The Transformers base model class of each registered VLM architecture (constants: never built from a file).
HF_BASE_CLASSES = {"Qwen2VLForConditionalGeneration": "Qwen2VLModel",
                   "Qwen2_5_VLForConditionalGeneration": "Qwen2_5_VLModel",
                   "Qwen3VLForConditionalGeneration": "Qwen3VLModel"}


class NPUModelForImageTextToText(NPUModelForCausalLM):
    """A vision-language model (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) on the simulated NPU, with HF's ``generate()``.

    Each image runs on the smallest visual bucket that holds it; its embeddings replace the
    image tokens at prefill; decoding is the decoder path's (buckets, paged KV cache).
    ``npu_stats.visual`` reports the bucket of each image and the padding waste.
    """

    hf_auto_class = AutoModelForImageTextToText

    def __init__(self, config, runtime: DecoderRuntime, visual: VisualRuntime, artifact_dir: Path,
                 npu_config: NPUVLMConfig, generation_config: GenerationConfig | None = None):
        super().__init__(config, runtime, artifact_dir, npu_config, generation_config)
        self.visual = visual
        arch = lookup_architecture(config, "vlm")
        self.rope_index = RopeIndex(type(self)._hf_base_class(arch.name), config)
        self._rope_deltas: list[int] = []

    @staticmethod
    def _hf_base_class(architecture: str) -> type:
        """The HF base class of a registry architecture (``architecture`` is a validated registry key)."""
        import transformers

        if architecture not in HF_BASE_CLASSES:
            raise ValueError(f"architecture {architecture!r} is not a supported vision-language model; supported: "
                             f"{sorted(HF_BASE_CLASSES)}")
        return getattr(transformers, HF_BASE_CLASSES[architecture])

    @property
    def decoder_config(self) -> NPUDecoderConfig:
        return self.npu_config.language_model

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def _export(cls, checkpoint: Path, npu_config: Any, compile_cache: Any = None,
                device_registry: DeviceRegistry | None = None):
        config = cls._resolve(AutoConfig.from_pretrained(checkpoint), npu_config)
        hf_model = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=torch.float32)
        return cls._compile_and_load(hf_model, config, checkpoint, compile_cache, device_registry)

    @classmethod
    def from_model(cls, hf_model: PreTrainedModel, npu_config: Any = None, processor_dir: str | Path | None = None,
                   compile_cache: Any = None, device_registry: DeviceRegistry | None = None):
        """Compiles an in-memory HF Qwen-VL model (``processor_dir``: processor/tokenizer files to ship;
        ``compile_cache`` and ``device_registry``: as for ``NPUModelForCausalLM``)."""
        config = cls._resolve(hf_model.config, npu_config)
        return cls._compile_and_load(hf_model, config, Path(processor_dir) if processor_dir else None, compile_cache,
                                     device_registry)

    @staticmethod
    def _resolve(hf_config, npu_config: Any) -> NPUVLMConfig:
        lookup_architecture(hf_config, "vlm")
        config = NPUVLMConfig.coerce(npu_config)
        config.visual.check_model(VisualModelConfig.from_hf(hf_config))
        language = config.language_model.resolve(DecoderModelConfig.from_hf(hf_config))
        return dataclasses.replace(config, language_model=language)

    @classmethod
    def _compile_and_load(cls, hf_model, config: NPUVLMConfig, processor_dir: Path | None, compile_cache=None,
                          device_registry: DeviceRegistry | None = None):
        arch = lookup_architecture(hf_model.config, "vlm")
        tmp, target = cls._new_artifact_dir()

        compile_with_cache(target, lambda: vlm_cache_key(hf_model, arch.name, config, processor_dir),
                           lambda path: compile_vlm(hf_model, arch, config, path, processor_dir), compile_cache)
        runtime = {"visual": {"device": list(config.visual_device)},  # a cache hit may have been placed elsewhere
                   "language_model": {name: getattr(config.language_model, name) for name in RUNTIME_OPTIONS}}
        model = cls._load(target, verify_artifact(target), runtime, device_registry)
        model._tmp_dir = tmp
        return model

    @classmethod
    def _load(cls, root: Path, stored: dict, npu_config: Any, device_registry: DeviceRegistry | None = None):
        """Loads a verified artifact; every stored knob is checked like user input and against the graphs
        before anything is allocated (see ``NPUModelForCausalLM._load``)."""
        root = Path(root)
        origin = str(root / NPU_CONFIG_FILE)
        stored = expect_dict(stored, origin, NPUConfigError)
        if stored.get("submodules") != SUBMODULE_DIRS:
            raise stored_knob_error(origin, f"submodules={short_repr(stored.get('submodules'))} must be "
                                            f"{SUBMODULE_DIRS}")
        for key in ("visual", "language_model"):
            if not isinstance(stored.get(key), dict):
                raise stored_knob_error(origin, f"{key}={short_repr(stored.get(key))} must be a JSON object of knobs")
        language_knobs = config_from_stored(stored["language_model"], f"language_model in {origin}")
        try:
            compiled = NPUVLMConfig.coerce({"visual": stored["visual"], "language_model": stored["language_model"],
                                            "npu": stored.get("npu")})
        except (NPUConfigError, VisualConfigError, TypeError) as err:
            raise stored_knob_error(origin, short_repr(str(err), 300)) from None
        if compiled.language_model.compile_knobs() != language_knobs.compile_knobs():
            raise stored_knob_error(origin, "the language_model knobs do not resolve to themselves")
        config = _apply_placement(compiled, npu_config)
        hf_config = read_hf_config(root)
        arch = check_stored_architecture(stored, hf_config, "vlm", origin)
        model = stored_model_config(hf_config, root)
        check_stored_config(config.language_model, model, f"language_model in {origin}")
        spec = stored_spec(stored, origin)
        manifest = _manifest_files(root)
        language_root = root / SUBMODULE_DIRS["language_model"]
        language_origin = str(language_root / NPU_CONFIG_FILE)
        language_doc = expect_dict(load_json(language_root / NPU_CONFIG_FILE, what=language_origin,
                                             error=ArtifactError), language_origin, ArtifactError)
        stored_language = config_from_stored(language_doc, language_origin)
        if stored_language.compile_knobs() != language_knobs.compile_knobs():
            raise ArtifactError(f"{language_origin}: its knobs differ from language_model in {origin}; {STORED_FIX}")
        graphs = language_doc.get("graphs")
        if isinstance(graphs, list) and len(graphs) <= 1 + len(language_knobs.decoder_batch_sizes):
            _check_in_manifest(manifest, root, SUBMODULE_DIRS["language_model"], graphs, origin)
        runtime = DecoderRuntime(language_root, config.language_model, model, spec, graphs, origin=language_origin,
                                 registry=device_registry)
        visual_root = root / SUBMODULE_DIRS["visual"]
        _check_in_manifest(manifest, root, SUBMODULE_DIRS["visual"], config.visual.graph_names(), origin)
        try:
            visual = VisualRuntime(visual_root, config.visual, spec, list(config.visual_device),
                                   owner=f"{arch.name} visual encoder", registry=device_registry,
                                   profiler=runtime.profiler)
        except BaseException:
            runtime.release()
            raise
        return cls(hf_config, runtime, visual, root, config, read_generation_config(root))

    # ---- model card ---------------------------------------------------------------------------
    @classmethod
    def card_section(cls, repo_id: str) -> CardSection:
        usage = ("## Use\n\n```python\nfrom transformers import AutoProcessor\n"
                 "from optimum_npu import NPUModelForImageTextToText\n\n"
                 f'model = NPUModelForImageTextToText.from_pretrained("{repo_id}")   # verified against '
                 "npu_manifest.json\n"
                 f'processor = AutoProcessor.from_pretrained("{repo_id}")\n'
                 'messages = [{"role": "user", "content": [{"type": "image", "image": image}, '
                 '{"type": "text", "text": "Describe it."}]}]\n'
                 "inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, "
                 'return_dict=True, return_tensors="pt")\n'
                 "out = model.generate(**inputs, max_new_tokens=32)\n"
                 "print(model.npu_stats)   # simulated TTFT, ms/token, memory, visual buckets used\n```")
        return CardSection("image-text-to-text", usage, ("visual_device", *RUNTIME_OPTIONS))

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

    def _batch_annotations(self) -> dict[str, Any]:
        return {"rope_deltas": self._rope_deltas, "visual": self._visual_stats}

    def release(self) -> None:
        """Frees both submodules' memory on their devices."""
        super().release()
        self.visual.release()


def _manifest_files(root: Path) -> set[str]:
    """The files the (already verified) manifest lists."""
    path = root / MANIFEST_FILE
    manifest = expect_dict(load_json(path, what=str(path), error=ArtifactError), str(path), ArtifactError)
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ArtifactError(f"{path} has no file list; re-download or recompile the model")
    return set(files)


def _check_in_manifest(manifest: set[str], root: Path, submodule: str, names: list, origin: str) -> None:
    """Every graph a submodule loads is a file the manifest lists (so its sha256 was checked)."""
    for name in names:
        if not isinstance(name, str):
            continue  # refused with the graph list check
        rel = graph_path(Path(submodule), name).as_posix()
        if rel not in manifest:
            raise ArtifactError(f"{root}: graph {name!r} ({rel}) listed in {origin} is missing from the manifest; "
                                f"{STORED_FIX}")


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


register_for_pipeline(NPUModelForImageTextToText, MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)
