"""Capacity planning for encoder-decoder models (T5, BART, Pegasus, Whisper) from weightless captures.

``optimum-npu plan t5-base`` (or whisper-small, a checkpoint folder with an encoder-decoder ``config.json``, ...)
prints ``seq2seq_plan_table``: per target, the memory one device holds (weights, the paged self-attention KV pool,
the cross-attention slots, workspace), each encoder bucket's latency, the prefill call, the decode time per token,
and for Whisper the simulated time to transcribe one 30-second window; ``--json`` prints ``seq2seq_plan_records``
(the same figures, one object per target) and ``--tensor-parallel-size N`` splits the model over N devices (figures
per device, collectives included). The estimate is the seq2seq family's (``models/seq2seq/estimate.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from optimum_npu.models.decoder.npu_config import NPUConfigError
from optimum_npu.untrusted import expect_dict, load_json

#: Targets a seq2seq plan compares when none are named.
PLAN_TARGETS = ("atom", "rngd", "a100-80gb", "h100-sxm")
#: Output tokens assumed for one 30-second Whisper window (Whisper's own generation limit is 448 positions; a window
#: of dense speech is about 100-150 words, i.e. roughly 150-220 tokens).
WHISPER_OUTPUT_TOKENS = 224
#: Knobs the plan uses when none are given: text models encode up to 512 tokens, decode up to 256.
TEXT_DEFAULTS = {"encoder_seq_lens": (128, 512), "encoder_batch_sizes": (1,), "max_seq_len": 256,
                 "prefill_chunk_size": 1}
#: Whisper: one 30-s mel window, the 4 forced prompt tokens (start, language, task, no-timestamps), 448 positions.
AUDIO_DEFAULTS = {"encoder_batch_sizes": (1,), "max_seq_len": 448, "prefill_chunk_size": 4}


def _folder_config(model: str) -> dict[str, Any]:
    path = Path(model)
    path = path / "config.json" if path.is_dir() else path
    if path.name != "config.json" or not path.is_file():
        return {}
    return expect_dict(load_json(path), str(path))


def is_seq2seq_model(model: str) -> bool:
    """Whether ``model`` names a built-in seq2seq shape or a folder / config.json of an encoder-decoder model (a
    compiled architecture, or any with ``is_encoder_decoder``: those are refused with the seq2seq family's list)."""
    from optimum_npu.models.seq2seq.architectures import LAYOUTS
    from optimum_npu.models.seq2seq.real_shapes import PRESETS

    if model in PRESETS:
        return True
    config = _folder_config(model)
    architectures = config.get("architectures")
    named = [a for a in architectures if isinstance(a, str)] if isinstance(architectures, list) else []
    return any(a in LAYOUTS for a in named) or config.get("is_encoder_decoder") is True


def plan_knobs(audio: bool, knobs: dict[str, Any], max_target_positions: int | None = None) -> dict[str, Any]:
    """The compile knobs of a plan: ``knobs`` over the family's defaults (the default ``max_seq_len`` capped at the
    decoder's positions; decode batches: powers of two up to ``batch_size``)."""
    defaults = dict(AUDIO_DEFAULTS if audio else TEXT_DEFAULTS)
    defaults["max_seq_len"] = min(defaults["max_seq_len"], max_target_positions or defaults["max_seq_len"])
    merged = {**defaults, "batch_size": 1, "dtype": "bfloat16", **{k: v for k, v in knobs.items() if v is not None}}
    if "decoder_batch_sizes" not in merged:
        merged["decoder_batch_sizes"] = tuple(sorted({min(2 ** i, merged["batch_size"])
                                                      for i in range(merged["batch_size"].bit_length())}))
    return merged


def _plan(model: str, npus: tuple[str, ...], knobs: dict[str, Any] | None, output_tokens: int | None):
    """(architecture, audio, resolved config, estimates, Whisper output tokens) of ``seq2seq_plan_table``'s
    arguments."""
    from optimum_npu.models.registry import lookup_architecture
    from optimum_npu.models.seq2seq.architectures import AUDIO, LAYOUTS, Seq2SeqModelConfig
    from optimum_npu.models.seq2seq.estimate import estimate_seq2seq
    from optimum_npu.models.seq2seq.real_shapes import PRESETS, folder_config, preset_config

    if output_tokens is not None and (not isinstance(output_tokens, int) or output_tokens < 1):
        raise NPUConfigError(f"output_tokens={output_tokens!r} is invalid: give an integer >= 1, e.g. 224")
    hf_config = preset_config(model) if model in PRESETS else folder_config(
        Path(model).parent if Path(model).is_file() else model)
    named = [a for a in (getattr(hf_config, "architectures", None) or []) if isinstance(a, str)]
    if not any(a in LAYOUTS for a in named):
        raise ValueError(f"{model}: architectures {named[:4]} hold no encoder-decoder model optimum-npu plans; "
                         f"supported: {sorted(LAYOUTS)} (the checkpoint's config.json names one in 'architectures')")
    architecture = lookup_architecture(hf_config, "seq2seq").name
    audio = architecture in AUDIO
    limit = Seq2SeqModelConfig.from_hf(hf_config, architecture).max_target_positions
    config, estimates = estimate_seq2seq(hf_config, plan_knobs(audio, knobs or {}, limit), tuple(npus))
    room = config.max_seq_len - config.prefill_chunk_size
    output_tokens = output_tokens or min(WHISPER_OUTPUT_TOKENS, room)
    if audio and output_tokens > room:
        raise NPUConfigError(f"output_tokens={output_tokens} does not fit max_seq_len={config.max_seq_len} after the "
                             f"{config.prefill_chunk_size} prompt tokens; use fewer tokens")
    return architecture, audio, config, estimates, output_tokens


def seq2seq_plan_table(model: str, npus: tuple[str, ...] = PLAN_TARGETS, knobs: dict[str, Any] | None = None,
                       output_tokens: int | None = None) -> str:
    """The plan of ``model`` (a built-in shape or a folder) on each target, as a table (no weights are read).

    Args:
        model: ``t5-base``, ``t5-large``, ``bart-large``, ``whisper-small``, ``whisper-large-v3``, or a folder /
            ``config.json`` of a T5, BART, Pegasus or Whisper checkpoint.
        npus: the targets (presets or JSON spec files).
        knobs: ``NPUSeq2SeqConfig`` fields over the plan's defaults (``TEXT_DEFAULTS`` / ``AUDIO_DEFAULTS``,
            bfloat16, batch 1); ``tensor_parallel_size`` splits the model (figures per device).
        output_tokens: Whisper: tokens generated after the forced prompt for one 30-s window (default
            ``WHISPER_OUTPUT_TOKENS``, or what ``max_seq_len`` leaves after the prompt when that is less).
    """
    architecture, audio, config, estimates, output_tokens = _plan(model, npus, knobs, output_tokens)
    encoder = "one 30-s mel window" if audio else f"encoder buckets {list(config.encoder_seq_lens)} tokens"
    lines = [f"{model} ({architecture}), {config.dtype}, {encoder} x batch {list(config.encoder_batch_sizes)}, "
             f"max_seq_len {config.max_seq_len}, batch_size {config.batch_size}, prefill chunk "
             f"{config.prefill_chunk_size} (weightless estimate, per device at tensor_parallel_size "
             f"{config.tensor_parallel_size}; decode at the longest context)",
             f"{'npu':<12}{'weights':>9}{'self KV':>9}{'cross KV':>9}{'work':>8}{'total GB':>10}  "
             f"{'encoder ms':<22}{'prefill ms':>11}  decode ms/token" + ("  30-s window s (RTF)" if audio else "")]
    for estimate in estimates:
        gb = [estimate.memory[k] / 1e9 for k in ("weights", "self_attn_kv", "cross_kv", "workspace")]
        over = " (over)" if estimate.total_bytes > estimate.capacity_bytes else ""
        encoder_ms = " / ".join(f"{s * 1e3:.4g}" for s in estimate.encoder_s.values())
        decode = " / ".join(f"b{b} {s * 1e3:.4g}" for b, s in estimate.decode_s.items())
        row = (f"{estimate.npu:<12}{gb[0]:>9.3f}{gb[1]:>9.3f}{gb[2]:>9.3f}{gb[3]:>8.3f}"
               f"{estimate.total_bytes / 1e9:>10.3f}{over}  {encoder_ms:<22}{estimate.prefill_s * 1e3:>11.4g}  "
               f"{decode}")
        if audio:
            seconds = window_seconds(estimate, output_tokens)
            row += f"  {seconds:.4g} ({seconds / 30:.4g})"
        lines.append(row)
    if audio:
        lines.append(f"30-s window: one encoder call (batch 1) + the prefill call + {output_tokens - 1} decode "
                     f"steps at batch 1 ({output_tokens} tokens after the forced prompt); RTF = seconds / 30")
    return "\n".join(lines)


def seq2seq_plan_records(model: str, npus: tuple[str, ...] = PLAN_TARGETS, knobs: dict[str, Any] | None = None,
                         output_tokens: int | None = None) -> list[dict[str, Any]]:
    """``seq2seq_plan_table``'s figures as JSON-ready records, one per target (bytes per device, seconds)."""
    architecture, audio, config, estimates, output_tokens = _plan(model, npus, knobs, output_tokens)
    records = []
    for estimate in estimates:
        record = {"model": model, "architecture": architecture, "npu": estimate.npu, "dtype": config.dtype,
                  "tensor_parallel_size": config.tensor_parallel_size, "batch_size": config.batch_size,
                  "max_seq_len": config.max_seq_len, "memory_bytes": dict(estimate.memory),
                  "total_bytes": estimate.total_bytes, "capacity_bytes": estimate.capacity_bytes,
                  "fits": estimate.total_bytes <= estimate.capacity_bytes, "encoder_s": dict(estimate.encoder_s),
                  "prefill_s": estimate.prefill_s,
                  "decode_s_per_token": {str(batch): s for batch, s in estimate.decode_s.items()}}
        if audio:
            seconds = window_seconds(estimate, output_tokens)
            record.update(output_tokens=output_tokens, window_s=seconds, real_time_factor=seconds / 30)
        records.append(record)
    return records


def window_seconds(estimate: Any, output_tokens: int) -> float:
    """Simulated seconds to transcribe one 30-s window into ``output_tokens`` tokens at batch 1: the encoder, the
    prefill call (which yields the first token) and one decode step per further token."""
    return next(iter(estimate.encoder_s.values())) + estimate.prefill_s + (output_tokens - 1) * estimate.decode_s[
        min(estimate.decode_s)]
