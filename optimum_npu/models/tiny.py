"""Small decoder models and a byte-level tokenizer built in code (nothing is downloaded).

Used by the built-in demo, the examples, the benchmarks and the tests.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

#: Size presets: "tiny" for tests, "demo" for the README's main command, "bench" (~76M parameters).
SIZES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16),
    "demo": dict(hidden_size=256, intermediate_size=704, num_hidden_layers=4, num_attention_heads=8,
                 num_key_value_heads=4, head_dim=32),
    "bench": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                  num_key_value_heads=4, head_dim=64),
}
MODEL_TYPES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral",
               "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3", "Gemma3ForCausalLM": "gemma3_text",
               "GPT2LMHeadModel": "gpt2", "OPTForCausalLM": "opt", "PhiForCausalLM": "phi",
               "Phi3ForCausalLM": "phi3", "GemmaForCausalLM": "gemma", "Gemma2ForCausalLM": "gemma2",
               "MixtralForCausalLM": "mixtral", "Qwen2MoeForCausalLM": "qwen2_moe", "Qwen3MoeForCausalLM": "qwen3_moe",
               "GptOssForCausalLM": "gpt_oss"}
#: Multi-head-only architectures: no key/value-head count, head_dim = hidden_size / heads.
MHA_ONLY = ("GPT2LMHeadModel", "OPTForCausalLM")
#: Config keys an architecture names differently.
RENAMED = {"GPT2LMHeadModel": {"intermediate_size": "n_inner"}, "OPTForCausalLM": {"intermediate_size": "ffn_dim"}}
#: Per-architecture extras: Qwen2's q/k/v biases, Phi's q/k LayerNorms (both read by their HF classes), experts.
EXTRAS = {"Qwen2ForCausalLM": {"attention_bias": True}, "PhiForCausalLM": {"qk_layernorm": True},
          # mixtures of 8 experts, 2 per token; Qwen2-MoE with a shared expert and its second layer dense
          "MixtralForCausalLM": {"num_local_experts": 8, "num_experts_per_tok": 2},
          "Qwen2MoeForCausalLM": {"num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
                                  "shared_expert_intermediate_size": 64, "mlp_only_layers": [1]},
          "Qwen3MoeForCausalLM": {"num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
                                  "norm_topk_prob": True},
          # gpt-oss: a sliding layer then a global one; a clamp this tiny model's activations reach
          "GptOssForCausalLM": {"num_local_experts": 8, "num_experts_per_tok": 2, "intermediate_size": 32,
                                "sliding_window": 16, "swiglu_limit": 0.2,
                                "rope_parameters": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0,
                                                    "beta_slow": 1.0, "truncate": False, "rope_theta": 150000.0,
                                                    "original_max_position_embeddings": 32}}}
#: Parameters HF initialises to zero that parity must exercise (gpt-oss's expert biases): seeded N(0, 0.1).
RANDOMISED = {"GptOssForCausalLM": ("gate_up_proj_bias", "down_proj_bias")}
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>"]
VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer: 256 byte tokens plus <pad>=0, <s>=1, </s>=2, left padding."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    vocab.update({ch: len(SPECIAL_TOKENS) + i for i, ch in enumerate(sorted(alphabet))})
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   padding_side="left")


def build_causal_lm(architecture: str = "LlamaForCausalLM", size: str = "tiny", seed: int = 0,
                    **overrides) -> PreTrainedModel:
    """A randomly initialised causal LM of a registered architecture (fp32, eval mode)."""
    kwargs = dict(SIZES[size], vocab_size=VOCAB_SIZE, max_position_embeddings=1024, pad_token_id=0,
                  bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    kwargs.update(EXTRAS.get(architecture, {}))
    if architecture in ("Gemma2ForCausalLM", "Gemma3ForCausalLM"):  # short-window local layers, one global layer
        kwargs.update(sliding_window=16, query_pre_attn_scalar=kwargs["head_dim"],
                      layer_types=["sliding_attention"] * (kwargs["num_hidden_layers"] - 1) + ["full_attention"])
    kwargs.update(overrides)
    if architecture in MHA_ONLY:
        kwargs.pop("num_key_value_heads", None)
        kwargs.pop("head_dim", None)
    for ours, theirs in RENAMED.get(architecture, {}).items():
        kwargs[theirs] = kwargs.pop(ours)
    config = AutoConfig.for_model(MODEL_TYPES[architecture], architectures=[architecture], **kwargs)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.rsplit(".", 1)[-1] in RANDOMISED.get(architecture, ()):
                parameter.normal_(0.0, 0.1)
    return model.eval()


def save_causal_lm(path: str | Path, architecture: str = "LlamaForCausalLM", size: str = "tiny", seed: int = 0,
                   **overrides) -> Path:
    """Builds a model and its tokenizer and saves both as an HF checkpoint directory."""
    path = Path(path)
    build_causal_lm(architecture, size, seed, **overrides).save_pretrained(path)
    build_tokenizer().save_pretrained(path)
    return path
