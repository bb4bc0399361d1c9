"""Tiny encoder checkpoints and a WordPiece tokenizer built in code (tests, examples; nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from transformers import BertTokenizerFast, PreTrainedModel

from optimum_npu.models.encoder.tasks import ENCODER_STEMS, task_of_architecture

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ("the a an of to in is was it on for with as by at from that this be are or and not but his her they we "
         "you he she cat dog sat mat paris france capital city river music play run fast slow red blue green big "
         "small house tree car road sun moon star sky sea ship book read write code model data train test cold hot "
         "day night north south east west water fire earth air who what where when why how").split()
VOCAB = SPECIAL_TOKENS + WORDS + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + list("abcdefghijklmnopqrstuvwxyz.,?!")
#: Model sizes: a few layers and heads, enough for every code path.
CONFIGS = {
    "bert": dict(hidden_size=32, num_attention_heads=4, intermediate_size=64, num_hidden_layers=2),
    "roberta": dict(hidden_size=32, num_attention_heads=4, intermediate_size=64, num_hidden_layers=2, pad_token_id=0,
                    bos_token_id=2, eos_token_id=3),
    "xlm-roberta": dict(hidden_size=32, num_attention_heads=4, intermediate_size=64, num_hidden_layers=2,
                        pad_token_id=0, bos_token_id=2, eos_token_id=3),
    "distilbert": dict(dim=32, n_heads=4, hidden_dim=64, n_layers=2, pad_token_id=0),
}


def build_wordpiece_tokenizer(directory: str | Path) -> BertTokenizerFast:
    """A lower-case WordPiece tokenizer over ``VOCAB`` (``[CLS] ... [SEP]``, ``[MASK]``), saved in ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(directory / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(directory)
    return tokenizer


def build_encoder(architecture: str, seed: int = 0, num_labels: int = 3,
                  max_position_embeddings: int = 128) -> PreTrainedModel:
    """A randomly initialised tiny ``architecture`` (e.g. ``BertForSequenceClassification``) in eval mode."""
    if task_of_architecture(architecture).name == "question-answering":   # refuses any other class too
        num_labels = 2   # start and end
    model_type = next(t for t, stem in ENCODER_STEMS.items() if architecture.startswith(stem)
                      and architecture[len(stem):][:1] in ("M", "F"))
    config = transformers.AutoConfig.for_model(model_type, vocab_size=len(VOCAB), num_labels=num_labels,
                                               max_position_embeddings=max_position_embeddings + 2,
                                               **CONFIGS[model_type])
    config.architectures = [architecture]
    torch.manual_seed(seed)
    return getattr(transformers, architecture)(config).eval()


def save_encoder(architecture: str, directory: str | Path, seed: int = 0) -> Path:
    """``build_encoder`` + the WordPiece tokenizer saved as a checkpoint folder."""
    build_encoder(architecture, seed).save_pretrained(directory)
    build_wordpiece_tokenizer(directory)
    return Path(directory)
