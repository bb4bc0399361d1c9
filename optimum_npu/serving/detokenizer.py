"""Text of a sequence's generated tokens as they come, ending it at a stop string.

The whole output is decoded again at each token (outputs are bounded by ``max_seq_len``), which keeps
multi-byte characters and merges right. ``stream_text`` holds back what may still change: an incomplete
character (decoded as U+FFFD) and a tail that could be the start of a stop string.
"""

from __future__ import annotations

from optimum_npu.runtime import Sequence


class Detokenizer:
    """Args:
        tokenizer: the model's tokenizer.
        stop: strings that end the output (cut from the text).
        skip_special_tokens: leave special tokens out of the text.
    """

    def __init__(self, tokenizer, stop: tuple[str, ...] = (), skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.stop = stop
        self.skip_special_tokens = skip_special_tokens
        self.text = ""
        self.stopped = False

    def __call__(self, seq: Sequence) -> bool:
        """Updates the text from ``seq``'s output; returns True when a stop string ended it."""
        text = self.tokenizer.decode(seq.output_ids, skip_special_tokens=self.skip_special_tokens)
        # a stop string can only newly appear in what the last token added (plus the stop's length before it)
        hits = [found for stop in self.stop if (found := text.find(stop, max(0, len(self.text) - len(stop)))) != -1]
        if hits:
            text, self.stopped = text[:min(hits)], True
        self.text = text
        return self.stopped

    def stream_text(self, finished: bool) -> str:
        """The text that can be sent now: all of it once finished; otherwise without a trailing partial character
        or a tail that a stop string could still claim."""
        if finished or self.stopped:
            return self.text
        text = self.text.rstrip("\ufffd")
        hold = 0
        for stop in self.stop:
            for size in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:size]):
                    hold = max(hold, size)
                    break
        return text[:len(text) - hold]
