"""Tiny encoder-decoder checkpoints and a word-level tokenizer built in code (tests, examples; nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from transformers import PreTrainedModel, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>", "<s>"]
WORDS = ("the a of to in is was it on for with as by at from that this be are or and not translate english "
         "german french summarize cat dog sat mat house tree car road sun moon star sky sea ship book read write "
         "red blue green big small day night water fire city river music fast slow hello world good morning "
         "question answer model data train test cold hot north south east west").split()
VOCAB = SPECIAL_TOKENS + WORDS + list("abcdefghijklmnopqrstuvwxyz.,?!:")
#: Model sizes: two layers, hidden 32, enough for every code path; initialised wider than the HF default so that
#: greedy and beam outputs vary with the input (at the default scale they repeat one token).
CONFIGS = {
    "T5ForConditionalGeneration": dict(model_type="t5", d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                       num_decoder_layers=2, num_heads=4, relative_attention_num_buckets=8,
                                       relative_attention_max_distance=16, pad_token_id=0, eos_token_id=1,
                                       decoder_start_token_id=0, initializer_factor=4.0),
    "BartForConditionalGeneration": dict(model_type="bart", d_model=32, encoder_layers=2, decoder_layers=2,
                                         encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                                         decoder_ffn_dim=64, max_position_embeddings=128, pad_token_id=0,
                                         eos_token_id=1, bos_token_id=3, decoder_start_token_id=1,
                                         forced_eos_token_id=1, init_std=0.2),
    "PegasusForConditionalGeneration": dict(model_type="pegasus", d_model=32, encoder_layers=2, decoder_layers=2,
                                            encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                                            decoder_ffn_dim=64, max_position_embeddings=128, pad_token_id=0,
                                            eos_token_id=1, decoder_start_token_id=0, forced_eos_token_id=1,
                                            init_std=0.2, scale_embedding=True),
}


def build_word_tokenizer(directory: str | Path | None = None, bos: bool = False) -> PreTrainedTokenizerFast:
    """A lower-case word-level tokenizer over ``VOCAB`` that ends every text with ``</s>`` (and starts it with
    ``<s>`` when ``bos``); saved in ``directory`` when given."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    core = Tokenizer(models.WordLevel({token: i for i, token in enumerate(VOCAB)}, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    core.decoder = decoders.WordPiece(prefix="##")   # joins words with spaces
    template = "<s> $A </s>" if bos else "$A </s>"
    core.post_processor = processors.TemplateProcessing(single=template, special_tokens=[
        ("</s>", VOCAB.index("</s>")), ("<s>", VOCAB.index("<s>"))])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                        bos_token="<s>", padding_side="right")
    if directory is not None:
        tokenizer.save_pretrained(directory)
    return tokenizer


def build_seq2seq(architecture: str = "T5ForConditionalGeneration", seed: int = 0, **overrides) -> PreTrainedModel:
    """A randomly initialised tiny encoder-decoder LM (fp32, eval mode)."""
    kwargs = dict(CONFIGS[architecture], vocab_size=len(VOCAB), **overrides)
    config = transformers.AutoConfig.for_model(kwargs.pop("model_type"), architectures=[architecture], **kwargs)
    torch.manual_seed(seed)
    return getattr(transformers, architecture)(config).eval()


def save_seq2seq(architecture: str, directory: str | Path, seed: int = 0) -> Path:
    """``build_seq2seq`` + the word tokenizer saved as a checkpoint folder."""
    build_seq2seq(architecture, seed).save_pretrained(directory)
    build_word_tokenizer(directory, bos=architecture == "BartForConditionalGeneration")
    return Path(directory)
