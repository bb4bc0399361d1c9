"""The HF-facing encoder classes: one class design, the task is data (``tasks.py``).

``NPUModelForFeatureExtraction``, ``NPUModelForSequenceClassification``, ``NPUModelForMaskedLM``,
``NPUModelForQuestionAnswering``, ``NPUModelForTokenClassification``: BERT, RoBERTa, XLM-R and
DistilBERT compiled into a grid of (batch size x sequence length) bucket graphs and run on the
simulated NPU; ``forward`` takes what the HF model takes and returns its output class, so
Transformers pipelines work on them. ``NPUModelForImageClassification``: ViT and ResNet over a grid of
(batch size x image size) buckets. ``NPUEncoderModel`` (the family's class) loads any of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, PreTrainedModel

from optimum_npu.compile.artifact import verify_artifact
from optimum_npu.compile.weights import load_weights, stored_weight_bytes
from optimum_npu.device.device import DeviceRegistry
from optimum_npu.device.engine import DeviceEngine
from optimum_npu.device.profiler import Profiler
from optimum_npu.hub.card import CardSection
from optimum_npu.hub.cached_compile import compile_with_cache
from optimum_npu.models.base import NPUPreTrainedModel
from optimum_npu.models.encoder.cache_key import encoder_cache_key
from optimum_npu.models.encoder.export import compile_encoder
from optimum_npu.models.encoder.modalities import FEEDS
from optimum_npu.models.encoder.npu_config import RUNTIME_OPTIONS, NPUEncoderConfig
from optimum_npu.models.encoder.runtime import EncoderRuntime, EncoderStats
from optimum_npu.models.encoder.stored import read_stored
from optimum_npu.models.encoder.tasks import (CTC, FEATURE_EXTRACTION, IMAGE_CLASSIFICATION, IMAGE_EMBEDDING,
                                              MASKED_LM, QUESTION_ANSWERING, SEQUENCE_CLASSIFICATION, TEXT_EMBEDDING,
                                              TOKEN_CLASSIFICATION, EncoderTask, task_of_architecture)
from optimum_npu.models.registry import lookup_architecture
from optimum_npu.schema import weights_file


class NPUEncoderModel(NPUPreTrainedModel):
    """An encoder compiled into bucket graphs. ``from_pretrained`` on this class loads or compiles any
    encoder task (the task comes from the artifact or the checkpoint's architecture); the task classes
    below compile their own task from any encoder checkpoint."""

    task: EncoderTask | None = None
    main_input_name = "input_ids"

    def __init__(self, config, runtime: EncoderRuntime, artifact_dir: Path, npu_config: NPUEncoderConfig,
                 profiler: Profiler | None = None):
        super().__init__(config)
        self._runtime = runtime
        self.artifact_dir = artifact_dir
        self.npu_config = npu_config
        self._profiler = profiler

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def _export(cls, checkpoint: Path, npu_config: Any, compile_cache: Any = None,
                device_registry: DeviceRegistry | None = None):
        hf_config = AutoConfig.from_pretrained(checkpoint)
        task = cls.task or task_of_architecture(lookup_architecture(hf_config, "encoder").name)
        config = _resolve(hf_config, npu_config, task)
        hf_model = task.auto_class.from_pretrained(checkpoint, dtype=getattr(torch, config.dtype))
        return cls._compile_and_load(hf_model, task, config, checkpoint, compile_cache, device_registry)

    @classmethod
    def from_model(cls, hf_model: PreTrainedModel, npu_config: Any = None, tokenizer_dir: str | Path | None = None,
                   compile_cache: Any = None, device_registry: DeviceRegistry | None = None):
        """Compiles an in-memory HF encoder (``tokenizer_dir``: the tokenizer or image processor files to ship;
        ``compile_cache`` and ``device_registry`` as for ``from_pretrained``)."""
        task = task_of_architecture(type(hf_model).__name__)
        if cls.task is not None and task is not cls.task:
            raise ValueError(f"{type(hf_model).__name__} is a {task.name} model; compile it with "
                             f"{TASK_CLASSES[task.name].__name__}.from_model")
        config = _resolve(hf_model.config, npu_config, task)
        return cls._compile_and_load(hf_model, task, config, Path(tokenizer_dir) if tokenizer_dir else None,
                                     compile_cache, device_registry)

    @classmethod
    def _compile_and_load(cls, hf_model, task: EncoderTask, config: NPUEncoderConfig, tokenizer_dir: Path | None,
                          compile_cache=None, device_registry: DeviceRegistry | None = None):
        architecture = type(hf_model).__name__
        tmp, target = cls._new_artifact_dir()
        compile_with_cache(target, lambda: encoder_cache_key(hf_model, architecture, config, tokenizer_dir, task.name),
                           lambda path: compile_encoder(hf_model, architecture, task, config, path, tokenizer_dir),
                           compile_cache)
        model = cls._load(target, verify_artifact(target), config.runtime(), device_registry)
        model._tmp_dir = tmp
        return model

    @classmethod
    def _load(cls, root: Path, stored: dict, npu_config: Any, device_registry: DeviceRegistry | None = None, *,
              profiler: Profiler | None = None):
        """Loads a verified artifact: every stored knob is checked (``stored.read_stored``) before the weights
        are reserved and loaded on the device (``profiler``: one shared with another model, e.g. CLIP's other
        tower; by default a new one when ``profile`` is on)."""
        facts = read_stored(Path(root), stored, npu_config)
        if cls.task is not None and facts.task is not cls.task:
            raise ValueError(f"{root} holds a {facts.task.name} model ({facts.architecture}); load it with "
                             f"{TASK_CLASSES[facts.task.name].__name__} or NPUEncoderModel")
        config = facts.config
        profiler = (profiler or Profiler()) if config.profile else None
        size = config.tensor_parallel_size
        engine = DeviceEngine(facts.graphs, facts.spec, config.device_ids, config.dtype,
                              weights=lambda rank: load_weights(Path(root) / weights_file(rank, size)),
                              weight_bytes=lambda rank: stored_weight_bytes(Path(root) / weights_file(rank, size)),
                              owner=facts.architecture, registry=device_registry, profiler=profiler)
        feed = FEEDS[facts.task.modality].for_model(facts.task, facts.inputs, getattr(torch, config.dtype),
                                                    facts.hf_config)
        runtime = EncoderRuntime(engine, facts.buckets, facts.task, facts.outputs, feed)
        return TASK_CLASSES[facts.task.name](facts.hf_config, runtime, Path(root), config, profiler)

    # ---- running ------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None,
                input_values: torch.Tensor | None = None, truncation: bool = False, return_dict: bool = True,
                interpolate_pos_encoding: bool | None = None, **ignored):
        """As the HF model's forward, on the bucket graphs: outputs of shape [batch, tokens, ...] or
        [batch, ...]; a batch larger than the largest batch bucket runs in several calls. Text: an input
        longer than the largest sequence bucket is refused (``truncation=True`` cuts it to that bucket
        instead). Images (``pixel_values``) run on the bucket of their size (ViT's position embeddings are
        interpolated to each compiled size, ``interpolate_pos_encoding`` is accepted for that). Audio
        (``input_values``, ``attention_mask`` per sample) runs on the smallest ``max_samples`` bucket that holds
        it; its logits have the frames of the unpadded audio. Other HF
        arguments (``output_hidden_states``, ``position_ids``...) are refused unless None or False."""
        asked = sorted(name for name, value in ignored.items() if value not in (None, False))
        if asked:
            raise ValueError(f"forward() got {asked}, which the compiled graphs do not take (they compute the "
                             f"task outputs {list(self._runtime.outputs)} from {list(self._runtime.feed.accepted)}); "
                             "leave them out")
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids,
                 "pixel_values": pixel_values, "input_values": input_values}
        outputs = self._runtime.run(given, truncation)
        result = self._runtime.task.output_class(**outputs)
        return result if return_dict else result.to_tuple()

    def generate(self, *args, **kwargs):
        """Encoders do not generate text (``optimum-npu generate`` / ``profile`` on an encoder artifact land here)."""
        raise ValueError(f"{type(self).__name__} is an encoder ({self._runtime.task.name}): it does not generate "
                         "text; call the model (model(**tokenizer(texts, return_tensors='pt')) or "
                         "model(**image_processor(images, return_tensors='pt'))) or a Transformers "
                         f"pipeline('{self._runtime.task.pipeline_tag}', model=model, ...)")

    @property
    def npu_dtype(self) -> str:
        """The compiled compute dtype (``model.dtype``, which pipelines cast pixel values to)."""
        return self.npu_config.dtype

    @property
    def npu_task(self) -> str:
        """The compiled task (``feature-extraction``, ``text-classification``...)."""
        return self._runtime.task.name

    @property
    def npu_stats(self) -> EncoderStats:
        """Every call since load (``.reset()``): buckets used, padding waste, simulated seconds, device memory."""
        return self._runtime.stats

    @property
    def npu_graphs(self) -> list[str]:
        """Names of the compiled bucket graphs (``encoder_b<batch>_s<tokens>``, ``image_b<batch>_px<size>``)."""
        return [bucket.name for bucket in self._runtime.buckets]

    @property
    def npu_profile(self) -> Profiler:
        """Every op of every call on the device's track (with ``npu_config={'profile': True}`` at load)."""
        if self._profiler is None:
            raise ValueError("profiling is off for this model; load it with npu_config={'profile': True}")
        return self._profiler

    def release(self) -> None:
        """Frees the model's memory on its simulated device."""
        self._runtime.engine.release()

    # ---- model card ---------------------------------------------------------------------------
    @classmethod
    def card_section(cls, repo_id: str) -> CardSection:
        task = cls.task or FEATURE_EXTRACTION
        name = TASK_CLASSES[task.name].__name__
        auto, argument = FEEDS[task.modality].preprocessor
        usage = (f"## Use\n\n```python\nfrom transformers import {auto}, pipeline\n"
                 f"from optimum_npu import {name}\n\n"
                 f'model = {name}.from_pretrained("{repo_id}")   # verified against npu_manifest.json\n'
                 f'{argument} = {auto}.from_pretrained("{repo_id}")\n'
                 f'runner = pipeline("{task.pipeline_tag}", model=model, {argument}={argument})\n'
                 "print(model.npu_stats)   # buckets used, padding waste, simulated time\n```")
        return CardSection(task.pipeline_tag, usage, RUNTIME_OPTIONS)


def _resolve(hf_config, npu_config: Any, task: EncoderTask) -> NPUEncoderConfig:
    """The knobs resolved against the model (its position limit bounds the sequence buckets; RoBERTa-style
    models number positions from ``pad_token_id + 1``; a vision model's own ``image_size`` is the default image
    bucket)."""
    return FEEDS[task.modality].resolve(NPUEncoderConfig.coerce(npu_config), hf_config)


class NPUModelForFeatureExtraction(NPUEncoderModel):
    """Hidden states of an encoder: ``last_hidden_state`` [batch, tokens, hidden] and ``pooler_output``."""

    task = FEATURE_EXTRACTION


class NPUModelForSequenceClassification(NPUEncoderModel):
    """Sequence classification (and cross-encoder reranking) ``logits`` [batch, labels]."""

    task = SEQUENCE_CLASSIFICATION


class NPUModelForMaskedLM(NPUEncoderModel):
    """Masked-LM ``logits`` [batch, tokens, vocab] (the fill-mask pipeline)."""

    task = MASKED_LM


class NPUModelForQuestionAnswering(NPUEncoderModel):
    """Extractive question answering ``start_logits`` / ``end_logits`` [batch, tokens]."""

    task = QUESTION_ANSWERING


class NPUModelForTokenClassification(NPUEncoderModel):
    """Token classification (NER) ``logits`` [batch, tokens, labels]."""

    task = TOKEN_CLASSIFICATION


class NPUModelForImageClassification(NPUEncoderModel):
    """Image classification (ViT, ResNet) ``logits`` [batch, labels] over (batch x image size) buckets (the
    image-classification pipeline)."""

    task = IMAGE_CLASSIFICATION
    main_input_name = "pixel_values"


class NPUCLIPTextModel(NPUEncoderModel):
    """CLIP's text tower with its projection (``CLIPTextModelWithProjection``): ``text_embeds`` [batch, dim] and
    ``last_hidden_state``; causal attention with the padding mask. ``NPUCLIPModel`` holds one."""

    task = TEXT_EMBEDDING


class NPUCLIPVisionModel(NPUEncoderModel):
    """CLIP's vision tower with its projection (``CLIPVisionModelWithProjection``): ``image_embeds`` [batch, dim]
    and ``last_hidden_state`` over (batch x image size) buckets. ``NPUCLIPModel`` holds one."""

    task = IMAGE_EMBEDDING
    main_input_name = "pixel_values"


class NPUModelForCTC(NPUEncoderModel):
    """Speech recognition with CTC (Wav2Vec2, layer-norm feature encoder): ``logits`` [batch, frames, vocab] over
    (batch x ``max_samples``) buckets (the automatic-speech-recognition pipeline)."""

    task = CTC
    main_input_name = "input_values"


#: The class of each task (by the task name an artifact stores, a key checked against ``TASKS``).
TASK_CLASSES: dict[str, type] = {cls.task.name: cls for cls in (
    NPUModelForFeatureExtraction, NPUModelForSequenceClassification, NPUModelForMaskedLM,
    NPUModelForQuestionAnswering, NPUModelForTokenClassification, NPUModelForImageClassification,
    NPUCLIPTextModel, NPUCLIPVisionModel, NPUModelForCTC)}
