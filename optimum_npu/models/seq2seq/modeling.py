"""``NPUModelForSeq2SeqLM``: T5 and BART compiled into encoder buckets and decoder graphs, with Transformers'
own ``generate()`` (greedy, beam search with beams as decode rows, sampling). Transformers 5.23 has no
translation / summarization / text2text-generation pipelines; ``generate()`` serves those uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForSeq2SeqLM, GenerationConfig, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput
from transformers.utils import ModelOutput
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES

from optimum_npu.compile.artifact import verify_artifact
from optimum_npu.device.device import DeviceRegistry
from optimum_npu.device.profiler import Profiler
from optimum_npu.hub.card import CardSection
from optimum_npu.hub.cached_compile import compile_with_cache
from optimum_npu.models.base import NPUPreTrainedModel
from optimum_npu.models.decoder.artifact_files import read_generation_config
from optimum_npu.models.hf_compat import register_for_pipeline
from optimum_npu.models.registry import lookup_architecture
from optimum_npu.models.seq2seq.architectures import Seq2SeqModelConfig
from optimum_npu.models.seq2seq.cache_key import seq2seq_cache_key
from optimum_npu.models.seq2seq.export import compile_seq2seq
from optimum_npu.models.seq2seq.npu_config import RUNTIME_OPTIONS, NPUSeq2SeqConfig
from optimum_npu.models.seq2seq.runtime import Seq2SeqRuntime, Seq2SeqStats
from optimum_npu.models.seq2seq.stored import read_stored
from optimum_npu.models.seq2seq.tp_plan import check_heads_divide


class _NPUEncoder:
    """What ``get_encoder()`` gives Transformers' generate(): the encoder bucket graphs behind an HF signature."""

    def __init__(self, owner: "NPUModelForSeq2SeqLM"):
        self._owner = owner

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, return_dict: bool = True,
                output_attentions: bool = False, output_hidden_states: bool = False) -> BaseModelOutput:
        if output_attentions or output_hidden_states:
            raise ValueError("output_attentions / output_hidden_states: the compiled encoder returns its last "
                             "hidden state only; leave them out")
        return BaseModelOutput(last_hidden_state=self._owner._encode(input_ids, attention_mask))

    __call__ = forward


class NPUModelForSeq2SeqLM(NPUPreTrainedModel, GenerationMixin):
    """An encoder-decoder LM (T5, BART) compiled for the simulated NPU.

    ``generate()`` is Transformers' own: the encoder runs once per input on its smallest bucket, each decoder row
    (input x beam) writes its cross-attention keys/values in its slot at prefill, and every step decodes all rows
    on the smallest compiled decode batch; beam search copies a row's self-attention blocks from its new parent.
    """

    main_input_name = "input_ids"
    _supports_cache_class = False
    hf_auto_class = AutoModelForSeq2SeqLM

    def __init__(self, config, runtime: Seq2SeqRuntime, artifact_dir: Path, npu_config: NPUSeq2SeqConfig,
                 generation_config: GenerationConfig | None = None):
        super().__init__(config)
        self._runtime = runtime
        self.artifact_dir = artifact_dir
        self.npu_config = npu_config
        self.generation_config = generation_config or GenerationConfig.from_model_config(config)
        self._encoder = _NPUEncoder(self)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def _export(cls, checkpoint: Path, npu_config: Any, compile_cache: Any = None,
                device_registry: DeviceRegistry | None = None):
        hf_config = AutoConfig.from_pretrained(checkpoint)
        arch = lookup_architecture(hf_config, "seq2seq")
        npu_config, extras = cls._pop_compile_extras(npu_config)
        config = _resolve(hf_config, arch.name, npu_config)
        hf_model = cls.hf_auto_class.from_pretrained(checkpoint, dtype=getattr(torch, config.dtype))
        return cls._compile_and_load(hf_model, config, checkpoint, compile_cache, device_registry,
                                     cls._alignment_heads_for(hf_model, extras))

    @classmethod
    def from_model(cls, hf_model: PreTrainedModel, npu_config: Any = None, tokenizer_dir: str | Path | None = None,
                   compile_cache: Any = None, device_registry: DeviceRegistry | None = None):
        """Compiles an in-memory HF model (``tokenizer_dir``: tokenizer / feature-extractor files to ship)."""
        npu_config, extras = cls._pop_compile_extras(npu_config)
        config = _resolve(hf_model.config, type(hf_model).__name__, npu_config)
        return cls._compile_and_load(hf_model, config, Path(tokenizer_dir) if tokenizer_dir else None, compile_cache,
                                     device_registry, cls._alignment_heads_for(hf_model, extras))

    @classmethod
    def _pop_compile_extras(cls, npu_config: Any) -> tuple[Any, bool]:
        """Compile knobs of a subclass that are not ``NPUSeq2SeqConfig`` fields (Whisper: ``token_timestamps``)."""
        return npu_config, False

    @classmethod
    def _alignment_heads_for(cls, hf_model: PreTrainedModel, extras: bool) -> tuple:
        """The (layer, head) pairs whose cross-attention the decoder graphs return (none for text models)."""
        return ()

    @classmethod
    def _compile_and_load(cls, hf_model, config: NPUSeq2SeqConfig, shipped: Path | None, compile_cache=None,
                          device_registry: DeviceRegistry | None = None, alignment_heads: tuple = ()):
        architecture = lookup_architecture(hf_model.config, "seq2seq").name
        tmp, target = cls._new_artifact_dir()
        compile_with_cache(target, lambda: seq2seq_cache_key(hf_model, architecture, config, shipped, alignment_heads),
                           lambda path: compile_seq2seq(hf_model, architecture, config, path, shipped, alignment_heads),
                           compile_cache)
        model = cls._load(target, verify_artifact(target), config.runtime(), device_registry)
        model._tmp_dir = tmp
        return model

    @classmethod
    def _load(cls, root: Path, stored: dict, npu_config: Any, device_registry: DeviceRegistry | None = None):
        """Loads a verified artifact; every stored knob and graph input is checked before anything is reserved."""
        facts = read_stored(Path(root), stored, npu_config)
        model_class = cls.model_class_for(facts.architecture)
        if not issubclass(model_class, cls):
            raise ValueError(f"{root} holds a {facts.architecture} model; load it with {model_class.__name__} "
                             "(or NPUAutoModel)")
        runtime = Seq2SeqRuntime(Path(root), facts, device_registry)
        return model_class(facts.hf_config, runtime, Path(root), facts.config, read_generation_config(root))

    @classmethod
    def model_class_for(cls, architecture: str) -> type:
        """The NPU class of an architecture (``NPUModelForSpeechSeq2Seq`` for Whisper, registered by ``speech.py``)."""
        return ARCHITECTURE_CLASSES.get(architecture, NPUModelForSeq2SeqLM)

    # ---- what the model is -------------------------------------------------------------------
    @property
    def npu_dtype(self) -> str:
        return self.npu_config.dtype

    @property
    def npu_graphs(self) -> list[str]:
        """Names of the compiled graphs (``encoder_b<B>_s<S>``, ``prefill``, ``decoder_batch_<n>``)."""
        return list(self._runtime.engine.graphs)

    @property
    def npu_stats(self) -> Seq2SeqStats:
        """Simulated figures of the last generate(): encoder, cross-KV + prompt, decode per step, memory."""
        return self._runtime.stats

    @property
    def npu_profile(self) -> Profiler:
        if self._runtime.profiler is None:
            raise ValueError("profiling is off for this model; load it with npu_config={'profile': True}")
        return self._runtime.profiler

    def release(self) -> None:
        """Frees the model's memory on its simulated device."""
        self._runtime.release()

    @classmethod
    def card_section(cls, repo_id: str) -> CardSection:
        usage = ("## Use\n\n```python\nfrom transformers import AutoTokenizer\n"
                 f"from optimum_npu import {cls.__name__}\n\n"
                 f'model = {cls.__name__}.from_pretrained("{repo_id}")   # verified against npu_manifest.json\n'
                 f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")\n'
                 'inputs = tokenizer(["translate English to German: hello"], return_tensors="pt")\n'
                 'print(tokenizer.batch_decode(model.generate(**inputs, max_new_tokens=32), skip_special_tokens=True))\n'
                 "print(model.npu_stats)   # encoder, cross-KV, decode per token\n```")
        return CardSection("text2text-generation", usage, RUNTIME_OPTIONS)

    # ---- generation ---------------------------------------------------------------------------
    def get_encoder(self, *args, **kwargs):
        return self._encoder

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the caches live on the simulated device, owned by the runtime

    def _encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        return self._runtime.encoder.run({"input_ids": input_ids, "attention_mask": attention_mask})["last_hidden_state"]

    def _cross_mask(self, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        """The encoder-position mask of the cross-attention (text: the input's attention mask)."""
        return attention_mask

    def generate(self, inputs: torch.Tensor | None = None, generation_config: GenerationConfig | None = None,
                 **kwargs):
        """Transformers' ``generate()``, after checking the request fits the compiled envelope."""
        self._check_request(inputs, generation_config, kwargs)
        self._runtime.start_call()
        try:
            output = super().generate(inputs, generation_config=generation_config, **kwargs)
        finally:
            self._runtime.stats.decoder = self._runtime.runner.stats
            self._runtime.batch.finish()
        if isinstance(output, ModelOutput) and "past_key_values" in output:   # the caches stay on the device
            output = type(output)(**{key: value for key, value in output.items() if key != "past_key_values"})
        return output

    def _check_request(self, inputs, generation_config, kwargs: dict) -> None:
        source = inputs if inputs is not None else kwargs.get(self.main_input_name)
        if not isinstance(source, torch.Tensor) or source.dim() < 2:
            raise ValueError(f"generate() needs {self.main_input_name} as a batched tensor (the tokenizer's or "
                             "feature extractor's return_tensors='pt' output)")
        resolved, _ = self._prepare_generation_config(generation_config, **dict(kwargs))
        rows = source.shape[0] * max(resolved.num_beams or 1, resolved.num_return_sequences or 1)
        limits = self.npu_config
        if rows > limits.batch_size:
            raise ValueError(f"{source.shape[0]} inputs x num_beams={resolved.num_beams} (num_return_sequences="
                             f"{resolved.num_return_sequences}) = {rows} decoder rows exceed the compiled batch_size="
                             f"{limits.batch_size}; split the batch, use fewer beams or recompile with batch_size >= "
                             f"{rows}")
        longest = resolved.max_length if resolved.max_new_tokens is None else resolved.max_new_tokens + 4
        if longest > limits.max_seq_len:
            raise ValueError(f"max_length / max_new_tokens allow {longest} decoder tokens but the graphs hold "
                             f"max_seq_len={limits.max_seq_len}; lower them or recompile with a larger max_seq_len")

    def prepare_inputs_for_generation(self, input_ids: torch.Tensor, encoder_outputs=None, attention_mask=None,
                                      is_first_iteration: bool = False, **kwargs) -> dict[str, Any]:
        return {"decoder_input_ids": input_ids, "encoder_outputs": encoder_outputs, "attention_mask": attention_mask,
                "npu_phase": "prefill" if is_first_iteration else "decode",
                "output_attentions": bool(kwargs.get("output_attentions"))}

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                decoder_input_ids: torch.Tensor | None = None, encoder_outputs=None, npu_phase: str = "prefill",
                output_attentions: bool = False, **kwargs) -> Seq2SeqLMOutput:
        """Prefill (encode when ``encoder_outputs`` is None, then every row's decoder prompt) or one decode step
        (the last column of ``decoder_input_ids``); returns the next-token logits [B, 1, V] in float32
        (``output_attentions``: and the compiled alignment heads' cross-attention, see ``alignment.py``)."""
        if decoder_input_ids is None:
            raise ValueError("forward() needs decoder_input_ids (generate() passes them)")
        runner = self._runtime.runner
        if output_attentions:
            self._runtime.require_alignment_heads()
            runner.extra_outputs = []
        try:
            output = self._step(input_ids, attention_mask, decoder_input_ids, encoder_outputs, npu_phase, kwargs)
        finally:
            records, runner.extra_outputs = runner.extra_outputs, None
        if output_attentions:
            prompt = decoder_input_ids.shape[1] if npu_phase == "prefill" else None
            output["cross_attentions"] = self._runtime.cross_attentions(records, decoder_input_ids.shape[0], prompt)
            output["decoder_attentions"] = ()   # self-attention weights are not returned by the graphs: no layers
        return output

    def _step(self, input_ids, attention_mask, decoder_input_ids, encoder_outputs, npu_phase: str,
              kwargs: dict) -> Seq2SeqLMOutput:
        if npu_phase == "prefill":
            if encoder_outputs is None:
                encoder_outputs = self._encoder(input_ids if input_ids is not None else kwargs.get(
                    self.main_input_name), attention_mask)
            hidden = encoder_outputs[0]
            rows = self._runtime.encoder_rows(hidden, self._cross_mask(attention_mask))
            prompts = [row.tolist() for row in decoder_input_ids]
            logits = self._runtime.batch.start(prompts, request_inputs=rows)
        elif npu_phase == "decode":
            logits = self._runtime.batch.step(decoder_input_ids[:, -1].tolist())
        else:
            raise ValueError(f"npu_phase={npu_phase!r} is not 'prefill' or 'decode'")
        return Seq2SeqLMOutput(logits=logits.float().unsqueeze(1), past_key_values=_DeviceCache(),
                               encoder_last_hidden_state=encoder_outputs[0] if encoder_outputs is not None else None)

    def _reorder_cache(self, past_key_values, beam_idx: torch.Tensor):
        """Beam search: each row continues the beam ``beam_idx[row]`` (its KV blocks copied on the device)."""
        self._runtime.reorder([int(i) for i in beam_idx])
        return past_key_values


#: Architectures whose NPU class is a subclass (filled by the modules that define them: ``speech.py``).
ARCHITECTURE_CLASSES: dict[str, type] = {}


class _DeviceCache:
    """Stands for the device-resident caches in Transformers' model kwargs (it reorders them through the model)."""

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0


def _resolve(hf_config, architecture: str, npu_config: Any) -> NPUSeq2SeqConfig:
    model = Seq2SeqModelConfig.from_hf(hf_config, architecture)
    config = NPUSeq2SeqConfig.coerce(npu_config).resolve(model.max_source_positions, model.audio_frames,
                                                         model.max_target_positions)
    check_heads_divide(model, config.tensor_parallel_size)
    return config


register_for_pipeline(NPUModelForSeq2SeqLM, MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES)
