"""What the planner sizes: an HF config from a ``config.json``, a model directory, a Hub id, or a built-in shape.

The built-in shapes copy the fields of the public ``config.json`` of each model that decide
its memory and speed (no weights, nothing downloaded), so ``optimum-npu plan llama-3-70b``
works offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PretrainedConfig

_LLAMA3 = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192, rope_theta=500000.0,
               rms_norm_eps=1e-5, tie_word_embeddings=False, dtype="bfloat16", bos_token_id=128000,
               eos_token_id=128001)

#: name -> (model_type, architecture, config fields, source).
BUILTIN_MODELS: dict[str, tuple[str, str, dict, str]] = {
    "llama-3-8b": ("llama", "LlamaForCausalLM", _LLAMA3, "meta-llama/Meta-Llama-3-8B config.json"),
    "llama-3-70b": ("llama", "LlamaForCausalLM",
                    {**_LLAMA3, "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
                     "num_attention_heads": 64}, "meta-llama/Meta-Llama-3-70B config.json"),
    "llama-3.2-1b": ("llama", "LlamaForCausalLM",
                     {**_LLAMA3, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                      "head_dim": 64, "max_position_embeddings": 131072, "tie_word_embeddings": True},
                     "meta-llama/Llama-3.2-1B config.json"),
    "qwen3-8b": ("qwen3", "Qwen3ForCausalLM",
                 dict(vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                      num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
                      rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=False, dtype="bfloat16"),
                 "Qwen/Qwen3-8B config.json"),
    "gemma-3-1b": ("gemma3_text", "Gemma3ForCausalLM",
                   dict(vocab_size=262144, hidden_size=1152, intermediate_size=6912, num_hidden_layers=26,
                        num_attention_heads=4, num_key_value_heads=1, head_dim=256, max_position_embeddings=32768,
                        sliding_window=512, sliding_window_pattern=6, query_pre_attn_scalar=256,
                        rope_theta=1000000.0, rope_local_base_freq=10000.0, tie_word_embeddings=True,
                        dtype="bfloat16"),
                   "google/gemma-3-1b-it config.json"),
    "mixtral-8x7b": ("mixtral", "MixtralForCausalLM",
                     dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                          num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768,
                          rope_theta=1000000.0, rms_norm_eps=1e-5, num_local_experts=8, num_experts_per_tok=2,
                          sliding_window=None, tie_word_embeddings=False, dtype="bfloat16"),
                     "mistralai/Mixtral-8x7B-v0.1 config.json"),
    "qwen3-30b-a3b": ("qwen3_moe", "Qwen3MoeForCausalLM",
                      dict(vocab_size=151936, hidden_size=2048, intermediate_size=6144, moe_intermediate_size=768,
                           num_hidden_layers=48, num_attention_heads=32, num_key_value_heads=4, head_dim=128,
                           num_experts=128, num_experts_per_tok=8, norm_topk_prob=True, decoder_sparse_step=1,
                           mlp_only_layers=[], max_position_embeddings=40960, rope_theta=1000000.0,
                           rms_norm_eps=1e-6, tie_word_embeddings=False, dtype="bfloat16"),
                      "Qwen/Qwen3-30B-A3B config.json"),
    # mixture of experts: gpt-oss (its experts planned in the compile dtype; the checkpoint ships them in MXFP4)
    "gpt-oss-120b": ("gpt_oss", "GptOssForCausalLM",
                     dict(vocab_size=201088, hidden_size=2880, intermediate_size=2880, num_hidden_layers=36,
                          num_attention_heads=64, num_key_value_heads=8, head_dim=64, num_local_experts=128,
                          num_experts_per_tok=4, sliding_window=128, swiglu_limit=7.0, attention_bias=True,
                          max_position_embeddings=131072, rms_norm_eps=1e-5, tie_word_embeddings=False,
                          rope_parameters={"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                                           "truncate": False, "original_max_position_embeddings": 4096,
                                           "rope_theta": 150000.0}, dtype="bfloat16"),
                     "openai/gpt-oss-120b config.json"),
}


def builtin_config(name: str) -> PretrainedConfig:
    """The HF config of a built-in shape (see ``BUILTIN_MODELS``)."""
    if name not in BUILTIN_MODELS:
        raise ValueError(f"{name!r} is not a built-in model shape; choose one of {sorted(BUILTIN_MODELS)}")
    from transformers import AutoConfig  # here, not at import: the command line lists the shapes without it

    model_type, architecture, fields, _ = BUILTIN_MODELS[name]
    return AutoConfig.for_model(model_type, architectures=[architecture], **fields)


def load_hf_config(model: str | Path | PretrainedConfig) -> PretrainedConfig:
    """Reads the config of ``model``.

    Args:
        model: an HF config object; a ``config.json`` path; a directory holding one (an HF
            checkpoint or a compiled artifact); a built-in shape name (``llama-3-8b``, ...);
            or a Hub repo id (only its ``config.json`` is fetched).
    Returns:
        The HF config (no weights are read).
    """
    from transformers import AutoConfig, PretrainedConfig

    if isinstance(model, PretrainedConfig):
        return model
    text = str(model)
    if text in BUILTIN_MODELS:
        return builtin_config(text)
    path = Path(text)
    if path.is_file() or (path.is_dir() and (path / "config.json").is_file()):
        return AutoConfig.from_pretrained(path)
    if path.is_dir():
        raise ValueError(f"model={text!r}: the directory has no config.json; give an HF checkpoint directory, a "
                         "config.json path, or a built-in shape " + str(sorted(BUILTIN_MODELS)))
    if text.count("/") == 1 and not text.endswith(".json"):
        try:
            return AutoConfig.from_pretrained(text)
        except OSError as err:
            raise ValueError(f"model={text!r}: not a local path and its config.json could not be fetched from the "
                             f"Hub ({str(err).splitlines()[0]}); give a config.json path, a model directory, or a "
                             f"built-in shape {sorted(BUILTIN_MODELS)}") from None
    raise ValueError(f"model={text!r} is neither an existing config.json / model directory nor a built-in shape; "
                     f"built-in shapes: {sorted(BUILTIN_MODELS)}")
