"""``NPUCLIPModel``: CLIP's text and vision towers compiled as two encoder submodules of one artifact.

Each tower is an encoder of the ``encoder`` family (``NPUCLIPTextModel``, ``NPUCLIPVisionModel``) with its own
bucket grid; the model normalises their embeddings and scales the cosine similarities by the stored logit
scale on the host, as Transformers' ``CLIPModel`` does, so ``pipeline("zero-shot-image-classification")`` works.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, CLIPModel
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.clip.modeling_clip import CLIPOutput

from optimum_npu.compile.artifact import verify_artifact
from optimum_npu.device.device import DeviceRegistry
from optimum_npu.device.profiler import Profiler
from optimum_npu.hub.card import CardSection
from optimum_npu.hub.cached_compile import compile_with_cache
from optimum_npu.models.base import NPUPreTrainedModel
from optimum_npu.models.clip.cache_key import clip_cache_key
from optimum_npu.models.clip.export import SUBMODULE_DIRS, compile_clip, towers
from optimum_npu.models.clip.npu_config import RUNTIME_OPTIONS, NPUCLIPConfig
from optimum_npu.models.clip.stored import read_stored
from optimum_npu.models.encoder.modalities import FEEDS
from optimum_npu.models.encoder.modeling import NPUCLIPTextModel, NPUCLIPVisionModel
from optimum_npu.models.encoder.runtime import EncoderStats
from optimum_npu.models.registry import lookup_architecture
from optimum_npu.schema import NPU_CONFIG_FILE
from optimum_npu.untrusted import load_json

#: The NPU class of each tower.
TOWER_CLASSES = {"text": NPUCLIPTextModel, "vision": NPUCLIPVisionModel}


@dataclass(frozen=True)
class CLIPStats:
    """Both towers' calls since load: ``text`` and ``vision`` (``EncoderStats``: buckets, padding, time)."""

    text: EncoderStats
    vision: EncoderStats

    @property
    def seconds(self) -> float:
        return self.text.seconds + self.vision.seconds

    def reset(self) -> None:
        self.text.reset()
        self.vision.reset()

    def __str__(self) -> str:
        return f"text: {self.text}; vision: {self.vision}"


class NPUCLIPModel(NPUPreTrainedModel):
    """CLIP on the simulated NPU: ``get_text_features``, ``get_image_features`` and ``forward`` (the image-text
    logits) as in Transformers, each tower on its own bucket grid."""

    main_input_name = "input_ids"

    def __init__(self, config, text: NPUCLIPTextModel, vision: NPUCLIPVisionModel, logit_scale: torch.Tensor,
                 artifact_dir: Path, npu_config: NPUCLIPConfig, profiler: Profiler | None = None):
        super().__init__(config)
        self.text_tower, self.vision_tower = text, vision
        self.logit_scale_value = logit_scale
        self.artifact_dir, self.npu_config, self._profiler = artifact_dir, npu_config, profiler

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def _export(cls, checkpoint: Path, npu_config: Any, compile_cache: Any = None,
                device_registry: DeviceRegistry | None = None):
        hf_config = AutoConfig.from_pretrained(checkpoint)
        lookup_architecture(hf_config, "clip")
        config = NPUCLIPConfig.coerce(npu_config)
        hf_model = CLIPModel.from_pretrained(checkpoint, dtype=getattr(torch, config.dtype))
        return cls.from_model(hf_model, config, checkpoint, compile_cache, device_registry)

    @classmethod
    def from_model(cls, hf_model: CLIPModel, npu_config: Any = None, processor_dir: str | Path | None = None,
                   compile_cache: Any = None, device_registry: DeviceRegistry | None = None):
        """Compiles an in-memory ``CLIPModel`` (``processor_dir``: tokenizer and image processor files to ship)."""
        config = NPUCLIPConfig.coerce(npu_config)
        parts = towers(hf_model)
        resolved = {name: FEEDS[TOWER_CLASSES[name].task.modality].resolve(config.tower(name), tower.config)
                    for name, tower in parts.items()}
        config = NPUCLIPConfig.from_towers(resolved["text"], resolved["vision"])
        processor_dir = Path(processor_dir) if processor_dir else None
        tmp, target = cls._new_artifact_dir()
        compile_with_cache(target, lambda: clip_cache_key(hf_model, "CLIPModel", config, processor_dir),
                           lambda path: compile_clip(hf_model, config, path, processor_dir), compile_cache)
        model = cls._load(target, verify_artifact(target), config.runtime(), device_registry)
        model._tmp_dir = tmp
        return model

    @classmethod
    def _load(cls, root: Path, stored: dict, npu_config: Any, device_registry: DeviceRegistry | None = None):
        """Loads a verified artifact: the top level's knobs and logit scale are checked, then each tower like an
        encoder artifact (its knobs must be the ones the top level states)."""
        facts = read_stored(Path(root), stored, npu_config)
        config = facts.config
        profiler = Profiler() if config.profile else None
        loaded: dict[str, Any] = {}
        try:
            for name, tower_class in TOWER_CLASSES.items():
                folder = Path(root) / SUBMODULE_DIRS[name]
                tower = tower_class._load(folder, load_json(folder / NPU_CONFIG_FILE), config.runtime(),
                                          device_registry, profiler=profiler)
                loaded[name] = tower
                expected = config.tower(name).to_dict()
                if {k: v for k, v in tower.npu_config.to_dict().items() if k in expected} != expected:
                    raise ValueError(f"{folder}/{NPU_CONFIG_FILE} holds other knobs than {root}/{NPU_CONFIG_FILE} "
                                     f"states for the {name} tower; the artifact was modified: re-download or "
                                     "recompile it")
        except BaseException:
            for tower in loaded.values():
                tower.release()
            raise
        return cls(facts.hf_config, loaded["text"], loaded["vision"], facts.logit_scale, Path(root), config, profiler)

    # ---- running ------------------------------------------------------------------------------
    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                          truncation: bool = False, **kwargs) -> BaseModelOutputWithPooling:
        """``pooler_output``: the projected text embeddings [batch, projection_dim] (as Transformers 5's CLIP);
        ``last_hidden_state`` [batch, tokens, hidden]."""
        out = self.text_tower(input_ids=input_ids, attention_mask=attention_mask, truncation=truncation, **kwargs)
        return BaseModelOutputWithPooling(last_hidden_state=out.last_hidden_state, pooler_output=out.text_embeds)

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        """``pooler_output``: the projected image embeddings [batch, projection_dim]; ``last_hidden_state``
        [batch, patches + 1, hidden]."""
        out = self.vision_tower(pixel_values=pixel_values, **kwargs)
        return BaseModelOutputWithPooling(last_hidden_state=out.last_hidden_state, pooler_output=out.image_embeds)

    def forward(self, input_ids: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, return_loss: bool | None = None,
                return_dict: bool = True, token_type_ids: torch.Tensor | None = None, **kwargs) -> CLIPOutput:
        """As ``CLIPModel.forward``: ``logits_per_image`` [images, texts] = ``exp(logit_scale)`` x the cosine
        similarities of the normalised embeddings, ``logits_per_text`` its transpose. No loss (inference).
        ``token_type_ids`` (from a tokenizer that makes them) are ignored, as by Transformers' CLIP."""
        if return_loss:
            raise ValueError("return_loss=True: the compiled CLIP runs inference only; compute the contrastive loss "
                             "from logits_per_text in Transformers")
        if input_ids is None or pixel_values is None:
            raise ValueError("forward() needs input_ids and pixel_values; for one side call get_text_features or "
                             "get_image_features")
        text = self.get_text_features(input_ids, attention_mask, **kwargs)
        vision = self.get_image_features(pixel_values)
        text_embeds = text.pooler_output / text.pooler_output.norm(p=2, dim=-1, keepdim=True)
        image_embeds = vision.pooler_output / vision.pooler_output.norm(p=2, dim=-1, keepdim=True)
        logits_per_text = text_embeds @ image_embeds.t() * self.logit_scale_value.exp().to(text_embeds.dtype)
        output = CLIPOutput(logits_per_image=logits_per_text.t(), logits_per_text=logits_per_text,
                            text_embeds=text_embeds, image_embeds=image_embeds, text_model_output=text,
                            vision_model_output=vision)
        return output if return_dict else output.to_tuple()

    @property
    def npu_dtype(self) -> str:
        return self.npu_config.dtype

    @property
    def npu_stats(self) -> CLIPStats:
        """Both towers' calls since load (``.reset()``): buckets used, padding waste, simulated seconds."""
        return CLIPStats(self.text_tower.npu_stats, self.vision_tower.npu_stats)

    @property
    def npu_graphs(self) -> list[str]:
        """The bucket graphs of both towers, named by their folder (``text_model/encoder_b1_s16``...)."""
        return [f"{SUBMODULE_DIRS[name]}/{graph}" for name, tower in
                (("text", self.text_tower), ("vision", self.vision_tower)) for graph in tower.npu_graphs]

    @property
    def npu_profile(self) -> Profiler:
        """Every op of both towers on the device's track (with ``npu_config={'profile': True}`` at load)."""
        if self._profiler is None:
            raise ValueError("profiling is off for this model; load it with npu_config={'profile': True}")
        return self._profiler

    def generate(self, *args, **kwargs):
        """CLIP does not generate text (``optimum-npu generate`` on a CLIP artifact lands here)."""
        raise ValueError("NPUCLIPModel scores images against texts, it does not generate text: call "
                         "get_text_features / get_image_features, the model, or pipeline("
                         "'zero-shot-image-classification', model=model, tokenizer=..., image_processor=...)")

    def release(self) -> None:
        """Frees both towers' memory on the simulated device."""
        self.text_tower.release()
        self.vision_tower.release()

    @classmethod
    def card_section(cls, repo_id: str) -> CardSection:
        usage = ("## Use\n\n```python\nfrom transformers import AutoImageProcessor, AutoTokenizer, pipeline\n"
                 "from optimum_npu import NPUCLIPModel\n\n"
                 f'model = NPUCLIPModel.from_pretrained("{repo_id}")   # verified against npu_manifest.json\n'
                 f'classify = pipeline("zero-shot-image-classification", model=model, '
                 f'tokenizer=AutoTokenizer.from_pretrained("{repo_id}"),\n'
                 f'                    image_processor=AutoImageProcessor.from_pretrained("{repo_id}"))\n'
                 'print(classify(image, candidate_labels=["a cat", "a dog"]))\n'
                 "print(model.npu_stats)   # per tower: buckets used, padding waste, simulated time\n```")
        return CardSection("zero-shot-image-classification", usage, RUNTIME_OPTIONS)
