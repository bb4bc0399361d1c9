"""``NPUModelForCausalLM``: a compiled decoder-only LM with Transformers' ``generate()``."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from optimum_npu.device.device import DeviceRegistry
from optimum_npu.device.profiler import Profiler
from optimum_npu.device.spec import resolve_spec
from optimum_npu.hub.card import CardSection
from optimum_npu.hub.cached_compile import compile_with_cache
from optimum_npu.models.decoder.cache_key import decoder_cache_key
from optimum_npu.models.base import NPUPreTrainedModel
from optimum_npu.models.decoder.artifact_files import (check_stored_architecture, read_generation_config,
                                                      read_hf_config, stored_model_config, stored_spec)
from optimum_npu.models.decoder.export import TOKENIZER_FILES, compile_decoder
from optimum_npu.models.decoder.figures import measure_figures
from optimum_npu.models.decoder.memory_plan import check_fits, exceeds_before_capture, plan_memory, suggest_fit
from optimum_npu.models.decoder.npu_config import RUNTIME_OPTIONS, NPUConfigError, NPUDecoderConfig
from optimum_npu.models.decoder.stored_config import check_stored_config, config_from_stored
from optimum_npu.models.decoder.prequantized import check_scheme, load_prequantized, with_checkpoint_format
from optimum_npu.models.decoder.runtime import DecoderRuntime
from optimum_npu.runtime.stats import NPUStats
from optimum_npu.models.hf_compat import register_for_pipeline
from optimum_npu.models.model_config import DecoderModelConfig
from optimum_npu.models.registry import lookup_architecture
from optimum_npu.schema import NPU_CONFIG_FILE
from optimum_npu.untrusted import expect_dict

logger = logging.getLogger(__name__)


class NPUModelForCausalLM(NPUPreTrainedModel, GenerationMixin):
    """A causal LM compiled into static-shape graphs and run on the simulated NPU.

    ``generate()`` is Transformers' own (greedy, sampling, repetition penalty, stop strings,
    streamers...). Each call prefills every prompt on the ``prefill`` graph, then decodes
    all sequences together on the smallest compiled decode batch that holds them.
    """

    main_input_name = "input_ids"
    _supports_cache_class = False
    hf_auto_class = AutoModelForCausalLM

    def __init__(self, config, runtime: DecoderRuntime, artifact_dir: Path, npu_config: NPUDecoderConfig,
                 generation_config: GenerationConfig | None = None, tmp_dir=None):
        super().__init__(config)
        self.npu_config = npu_config
        self.artifact_dir = artifact_dir
        self._tmp_dir = tmp_dir
        self._runtime = runtime
        self.generation_config = generation_config or GenerationConfig.from_model_config(config)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def _export(cls, checkpoint: Path, npu_config: Any, compile_cache: Any = None,
                device_registry: DeviceRegistry | None = None) -> "NPUModelForCausalLM":
        hf_config = AutoConfig.from_pretrained(checkpoint)
        if getattr(hf_config, "quantization_config", None) is not None:  # compiled as quantized, not re-quantized
            origin = str(Path(checkpoint) / "config.json")
            npu_config = with_checkpoint_format(npu_config, check_scheme(hf_config.quantization_config, origin), origin)
        config = cls._resolve_for_export(hf_config, npu_config)
        loaded = load_prequantized(Path(checkpoint), hf_config, getattr(torch, config.dtype))
        if loaded is None:
            hf_model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=getattr(torch, config.dtype))
            return cls._compile_and_load(hf_model, config, checkpoint, compile_cache, device_registry)
        return cls._compile_and_load(loaded[0], config, checkpoint, False, device_registry, prequantized=loaded[1])

    @classmethod
    def from_model(cls, hf_model: PreTrainedModel, npu_config: Any = None, tokenizer_dir: str | Path | None = None,
                   compile_cache: Any = None, device_registry: DeviceRegistry | None = None) -> "NPUModelForCausalLM":
        """Compiles an in-memory HF model (``tokenizer_dir``: optional folder of tokenizer files to ship;
        ``compile_cache``: None/True/False/directory/``CompileCache``, see ``optimum_npu.hub.CompileCache``;
        ``device_registry``: as for ``from_pretrained``)."""
        config = cls._resolve_for_export(hf_model.config, npu_config)
        return cls._compile_and_load(hf_model, config, Path(tokenizer_dir) if tokenizer_dir else None, compile_cache,
                                     device_registry)

    @staticmethod
    def _resolve_for_export(hf_config, npu_config: Any) -> NPUDecoderConfig:
        arch = lookup_architecture(hf_config, "decoder")
        model = DecoderModelConfig.from_hf(hf_config)
        config = NPUDecoderConfig.coerce(npu_config).resolve(model)
        spec = resolve_spec(config.npu)
        request = plan_memory(model, config)  # the shape estimate: no graph exists yet (see memory_plan)
        if exceeds_before_capture(request, spec):
            check_fits(request, spec, owner=arch.name, suggestion=suggest_fit(model, config, spec))
        return config

    @classmethod
    def _compile_and_load(cls, hf_model, config: NPUDecoderConfig, tokenizer_dir: Path | None, compile_cache=None,
                          device_registry: DeviceRegistry | None = None, prequantized=None):
        arch = lookup_architecture(hf_model.config, "decoder")
        if tokenizer_dir is None or not any((Path(tokenizer_dir) / name).is_file() for name in TOKENIZER_FILES):
            logger.warning("no tokenizer files in %s: the compiled artifact will have none, so `optimum-npu generate` "
                           "and pipelines need a tokenizer given separately; ship one with from_model(..., "
                           "tokenizer_dir=...) or export from a checkpoint folder that holds it",
                           tokenizer_dir or "the in-memory model")
        tmp, target = cls._new_artifact_dir()
        compile_with_cache(target, lambda: decoder_cache_key(hf_model, arch.name, config, tokenizer_dir),
                           lambda path: compile_decoder(hf_model, arch, config, path, tokenizer_source=tokenizer_dir,
                                                        prequantized=prequantized),
                           compile_cache)
        from optimum_npu.compile.artifact import verify_artifact

        runtime_options = {name: getattr(config, name) for name in RUNTIME_OPTIONS}  # a cache hit may differ
        model = cls._load(target, verify_artifact(target), runtime_options, device_registry)
        model._tmp_dir = tmp
        return model

    @classmethod
    def _load(cls, root: Path, stored: dict, npu_config: Any,
              device_registry: DeviceRegistry | None = None) -> "NPUModelForCausalLM":
        """Loads a verified artifact. Its files are untrusted data: every stored knob is checked like user input,
        then against config.json and the graphs, and sizes are bounded, before anything is allocated."""
        origin = str(Path(root) / NPU_CONFIG_FILE)
        stored = expect_dict(stored, origin, NPUConfigError)
        config = config_from_stored(stored, origin)
        config = dataclasses.replace(config, **_runtime_overrides(config, npu_config))
        hf_config = read_hf_config(root)
        check_stored_architecture(stored, hf_config, "decoder", origin)
        model = stored_model_config(hf_config, root)
        check_stored_config(config, model, origin)
        spec = stored_spec(stored, origin)
        runtime = DecoderRuntime(root, config, model, spec, stored.get("graphs"), origin=origin,
                                 registry=device_registry)
        return cls(hf_config, runtime, root, config, read_generation_config(root))

    # ---- model card ---------------------------------------------------------------------------
    @classmethod
    def card_section(cls, repo_id: str) -> CardSection:
        usage = ("## Use\n\n```python\nfrom transformers import AutoTokenizer\n"
                 "from optimum_npu import NPUModelForCausalLM\n\n"
                 f'model = NPUModelForCausalLM.from_pretrained("{repo_id}")   # verified against npu_manifest.json\n'
                 f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}", padding_side="left")\n'
                 'out = model.generate(**tokenizer(["Hello"], return_tensors="pt"), max_new_tokens=32)\n'
                 "print(model.npu_stats)   # simulated TTFT, ms/token, memory\n```")
        return CardSection("text-generation", usage, RUNTIME_OPTIONS)

    def card_figures(self, speed: bool = True) -> dict[str, Any]:
        return measure_figures(self, speed=speed)

    # ---- what the model is -------------------------------------------------------------------
    @property
    def npu_dtype(self) -> str:
        return self.decoder_config.dtype

    def npu_summary(self) -> dict[str, Any]:
        config = self.decoder_config
        buckets = config.buckets().values()
        prefill = [f"{b.batch}x{b.tokens}" for b in buckets if b.kind == "prefill"]
        decode = [b.batch for b in buckets if b.kind == "decode"]
        devices = [device.name for device in self._runtime.engine.devices]
        return {"architecture": getattr(self.config, "architectures", None) or ["?"],
                "npu": config.npu, "dtype": config.dtype, "max_seq_len": config.max_seq_len,
                "prefill": prefill, "decode_batches": decode, "tensor_parallel_size": config.tensor_parallel_size,
                "quantization": config.quantization.to_dict() if config.quantization else None,
                "devices": devices, **super().npu_summary()}

    @classmethod
    def _with_compile_dtype(cls, npu_config: Any, dtype: str) -> NPUDecoderConfig:
        config = NPUDecoderConfig.coerce(npu_config)
        if config.dtype not in (None, dtype):
            raise NPUConfigError(f"dtype={dtype!r} differs from npu_config dtype={config.dtype!r}; give it once")
        return dataclasses.replace(config, dtype=dtype)

    # ---- generation ---------------------------------------------------------------------------
    @property
    def npu_graphs(self) -> list[str]:
        """Names of the compiled graphs (``prefill``, ``decoder_batch_<n>``...)."""
        return list(self._runtime.programs)

    @property
    def npu_stats(self) -> NPUStats:
        """Simulated NPU time per phase, graphs used and device memory of the last call."""
        return self._runtime.stats

    @property
    def npu_profile(self) -> Profiler:
        """Every op / fused group of every graph call on its device's track (``.summary()``, ``.save(path)``)."""
        if self._runtime.profiler is None:
            raise ValueError("profiling is off for this model; load it with npu_config={'profile': True}, e.g. "
                             "NPUModelForCausalLM.from_pretrained(path, npu_config={'profile': True})")
        return self._runtime.profiler

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the KV cache lives on the simulated device, owned by the runtime

    def generate(self, inputs: torch.Tensor | None = None, generation_config: GenerationConfig | None = None,
                 **kwargs):
        """Transformers' ``generate()``, after checking the request fits the compiled envelope."""
        self._check_request(inputs, generation_config, kwargs)
        try:
            return super().generate(inputs, generation_config=generation_config, **kwargs)
        finally:
            self._finish_sequences()

    def _finish_sequences(self) -> None:
        self._runtime.batch.finish()

    @property
    def decoder_config(self) -> NPUDecoderConfig:
        """The knobs of the compiled decoder (the language model of a multimodal model)."""
        return self.npu_config

    def _check_request(self, inputs, generation_config, kwargs: dict) -> None:
        input_ids = inputs if inputs is not None else kwargs.get("input_ids")
        self._check_inputs(input_ids, kwargs.get("attention_mask"), "generate()")
        resolved, _ = self._prepare_generation_config(generation_config, **dict(kwargs))
        if (resolved.num_beams or 1) > 1:
            raise ValueError(f"num_beams={resolved.num_beams} is not supported on the NPU runtime; use greedy or "
                             "sampling (num_beams=1)")
        batch = input_ids.shape[0] * (resolved.num_return_sequences or 1)
        limits = self.decoder_config
        if batch > limits.batch_size:
            raise ValueError(f"a batch of {batch} sequences exceeds the compiled batch_size="
                             f"{limits.batch_size}; split the batch or recompile with batch_size >= {batch}")
        mask = kwargs.get("attention_mask")
        longest = int(mask.sum(-1).max()) if mask is not None else input_ids.shape[1]
        if resolved.max_new_tokens is not None:
            total = longest + resolved.max_new_tokens
        else:
            total = longest + resolved.max_length - input_ids.shape[1]
        if total > limits.max_seq_len:
            raise ValueError(f"prompt ({longest} tokens) + new tokens ({total - longest}) = {total} exceeds the "
                             f"compiled max_seq_len={limits.max_seq_len}; lower max_new_tokens/max_length "
                             "or recompile with a larger max_seq_len")

    @property
    def _vocab_size(self) -> int:
        return self._runtime.model.vocab_size

    def _check_inputs(self, input_ids, attention_mask, caller: str) -> None:
        """Refuses, before any compute, token ids and masks the graphs cannot take."""
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            raise ValueError(f"{caller} needs input_ids of shape [batch, seq_len] (e.g. from the tokenizer with "
                             "return_tensors='pt')")
        if input_ids.dtype == torch.bool or input_ids.is_floating_point() or input_ids.is_complex():
            raise ValueError(f"{caller}: input_ids must hold integer token ids (torch.long), got dtype "
                             f"{input_ids.dtype}; convert them with input_ids.long() only if they really are ids "
                             "(the tokenizer's return_tensors='pt' gives torch.long)")
        if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
            raise ValueError(f"{caller}: input_ids of shape {list(input_ids.shape)} is empty; give at least one "
                             "token per sequence")
        vocab = self._vocab_size
        low, high = int(input_ids.min()), int(input_ids.max())
        if low < 0 or high >= vocab:
            bad = low if low < 0 else high
            row, col = (input_ids == bad).nonzero()[0].tolist()
            raise ValueError(f"{caller}: input_ids[{row}, {col}]={bad} is not a token id of this model: ids must be "
                             f"in [0, {vocab - 1}] (vocab_size={vocab} in config.json); use the model's tokenizer")
        if attention_mask is None:
            return
        if not isinstance(attention_mask, torch.Tensor):
            raise ValueError(f"{caller}: attention_mask must be a tensor like input_ids, got "
                             f"{type(attention_mask).__name__}")
        if tuple(attention_mask.shape) != tuple(input_ids.shape):
            raise ValueError(f"{caller}: attention_mask has shape {list(attention_mask.shape)} but input_ids has "
                             f"shape {list(input_ids.shape)}; they must match (pass the tokenizer's input_ids and "
                             "attention_mask together)")
        if attention_mask.is_complex() or not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
            raise ValueError(f"{caller}: attention_mask must hold only 0 (padding) and 1 (token)")
        empty = (attention_mask.sum(-1) == 0).nonzero()
        if len(empty):
            raise ValueError(f"{caller}: row {int(empty[0])} of attention_mask is all 0, so that sequence has no "
                             "token; drop the row or give it at least one token")

    def prepare_inputs_for_generation(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                                      is_first_iteration: bool = False, **kwargs) -> dict[str, Any]:
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "npu_phase": "prefill" if is_first_iteration else "decode"}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                npu_phase: str = "prefill", logits_to_keep: int | None = None, num_logits_to_keep: int | None = None,
                **kwargs) -> CausalLMOutputWithPast:
        """Prefill (every row of ``input_ids``, left padding removed by ``attention_mask``) or one
        decode step (the last column); returns the next-token logits [B, 1, V] in float32.

        ``logits_to_keep=0`` (or ``num_logits_to_keep=0``), as in Transformers, returns every position's logits
        [B, S, V] (perplexity, scoring) through the ``prefill_all_logits`` graph that
        ``npu_config={"prefill_logits": "all"}`` compiles; left-padding positions hold zeros."""
        keep = logits_to_keep if logits_to_keep is not None else num_logits_to_keep
        if npu_phase == "prefill" and keep not in (None, 1):
            if keep != 0:
                raise ValueError(f"logits_to_keep={keep}: the compiled graphs return the last position (1) or, "
                                 "compiled with prefill_logits='all', every position (0)")
            return CausalLMOutputWithPast(logits=self._every_position_logits(input_ids, attention_mask, **kwargs))
        if npu_phase == "prefill":
            self._check_inputs(input_ids, attention_mask, "forward()")
            logits = self._prefill_prompts(input_ids, attention_mask, **kwargs)
        elif npu_phase == "decode":
            self._check_inputs(input_ids[:, -1:] if isinstance(input_ids, torch.Tensor) and input_ids.dim() == 2
                               else input_ids, None, "forward()")
            logits = self._decode_step(input_ids[:, -1])
        else:
            raise ValueError(f"npu_phase={npu_phase!r} is not 'prefill' or 'decode'")
        return CausalLMOutputWithPast(logits=logits.float().unsqueeze(1))

    def _prefill_prompts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                         all_positions: bool = False, **inputs) -> torch.Tensor | list[torch.Tensor]:
        batch = input_ids.shape[0]
        if batch > self.decoder_config.batch_size:
            raise ValueError(f"a batch of {batch} exceeds the compiled batch_size={self.decoder_config.batch_size}")
        keep = [torch.ones_like(input_ids[row], dtype=torch.bool) if attention_mask is None
                else attention_mask[row].bool() for row in range(batch)]
        rows = [input_ids[row][keep[row]].tolist() for row in range(batch)]
        self._runtime.batch.check(rows)
        extras = self._prompt_extras(input_ids, attention_mask, keep, **inputs)
        return self._runtime.batch.start(rows, extras, **self._batch_annotations(), all_positions=all_positions)

    def _every_position_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                               **inputs) -> torch.Tensor:
        self._check_inputs(input_ids, attention_mask, "forward()")
        self._runtime.runner.require_all_logits()  # before any graph (a VLM's visual encoder included) runs
        per_row = self._prefill_prompts(input_ids, attention_mask, all_positions=True, **inputs)
        logits = torch.zeros(*input_ids.shape, per_row[0].shape[-1])                    # [B, S, V]
        for row, values in enumerate(per_row):
            real = torch.ones_like(input_ids[row], dtype=torch.bool) if attention_mask is None \
                else attention_mask[row].bool()
            logits[row, real] = values.float()
        return logits

    def _prompt_extras(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                       keep: list[torch.Tensor], **inputs) -> list[dict | None]:
        """Per-row extra prefill inputs (multimodal models); none for text-only decoders."""
        return [None] * input_ids.shape[0]

    def _batch_annotations(self) -> dict[str, Any]:
        """What a multimodal model adds to a batch: M-RoPE deltas and the visual encoder's stats."""
        return {}

    def _decode_step(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._runtime.batch.step(tokens.tolist())

    def release(self) -> None:
        """Frees the model's memory on its simulated device."""
        self._runtime.release()



register_for_pipeline(NPUModelForCausalLM, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)

def _runtime_overrides(stored: NPUDecoderConfig, requested: Any) -> dict[str, Any]:
    """Runtime options from ``requested``; a changed compile knob is an error."""
    if requested is None:
        return {}
    if isinstance(requested, NPUDecoderConfig):
        requested = {f.name: getattr(requested, f.name) for f in dataclasses.fields(requested)
                     if getattr(requested, f.name) != f.default}
    if not isinstance(requested, dict):
        raise NPUConfigError(f"npu_config must be a dict or NPUDecoderConfig, got {type(requested).__name__}")
    stored_knobs = stored.to_dict()
    for key, value in requested.items():
        if key in RUNTIME_OPTIONS:
            continue
        if key not in stored_knobs:
            raise NPUConfigError(f"unknown npu_config key {key!r}; runtime options are {list(RUNTIME_OPTIONS)}")
        expected = list(value) if isinstance(value, tuple) else value
        if expected != stored_knobs[key]:
            raise NPUConfigError(
                f"npu_config[{key!r}]={value!r} differs from the compiled {key}={stored_knobs[key]!r}; compile "
                f"knobs cannot change at load time (only {list(RUNTIME_OPTIONS)} can): recompile with "
                "from_pretrained(checkpoint, export=True, npu_config=...)"
            )
    return {key: value for key, value in requested.items() if key in RUNTIME_OPTIONS}
