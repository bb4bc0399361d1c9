"""The tokenizer shared by the engine thread (detokenizing) and the HTTP handlers (encoding), behind a lock:
a fast tokenizer's Rust core refuses concurrent use ("Already borrowed")."""

from __future__ import annotations

import threading


class SharedTokenizer:
    """The few tokenizer calls serving makes, serialised.

    Args:
        tokenizer: a Transformers tokenizer.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._lock = threading.Lock()

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def encode(self, text: str) -> list[int]:
        with self._lock:
            return list(self.tokenizer.encode(text, add_special_tokens=True))

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        with self._lock:
            return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def token_text(self, token: int) -> str:
        """One token's text (for logprobs)."""
        return self.decode([token], skip_special_tokens=False)

    def chat_prompt(self, messages: list[dict], chat_template: str | None = None) -> str:
        """The prompt text of a conversation by the chat template, ending with the assistant's turn."""
        with self._lock:
            return self.tokenizer.apply_chat_template(messages, chat_template=chat_template, tokenize=False,
                                                      add_generation_prompt=True)

    def encode_chat(self, text: str) -> list[int]:
        """Token ids of a rendered chat prompt (the template already placed the special tokens)."""
        with self._lock:
            return list(self.tokenizer.encode(text, add_special_tokens=False))
