"""Loading what a server or ``LLM`` serves: a compiled decoder artifact (directory or Hub id) and its tokenizer."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer

from optimum_npu.models.auto import NPUAutoModel


def load_for_serving(model_id: str | Path, device: int | None = None, profile: bool = False,
                     tokenizer: str | Path | None = None):
    """Loads a compiled decoder (text or vision-language) and its tokenizer; returns ``(model, tokenizer)``.

    Args:
        model_id: a compiled artifact directory or a Hub repo id holding one.
        device: the simulated device to load on (default: the artifact's).
        profile: record every graph call on the profiler (``/start_profile`` works either way).
        tokenizer: a tokenizer directory or id (default: the one shipped in the artifact).
    """
    options = {"profile": True} if profile else {}
    if device is not None:
        options["device"] = device
    model = NPUAutoModel.from_pretrained(model_id, npu_config=options or None)
    try:
        tok = AutoTokenizer.from_pretrained(tokenizer or model.artifact_dir)
    except (OSError, ValueError) as err:
        model.release()
        raise ValueError(f"no tokenizer could be loaded from {tokenizer or model.artifact_dir} ({err}); pass "
                         "--tokenizer with a tokenizer directory") from None
    return model, tok
