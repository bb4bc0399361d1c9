"""``SamplingParams``: how a request samples, with vLLM's names, validated when built."""

from __future__ import annotations

from dataclasses import dataclass, field


class InvalidParameterError(ValueError):
    """A request parameter out of range; ``param`` names it (the server answers 400 with it)."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


def _check(condition: bool, param: str, value, allowed: str) -> None:
    if not condition:
        raise InvalidParameterError(param, f"{param}={value!r} is invalid: {allowed}")


@dataclass(frozen=True)
class SamplingParams:
    """Sampling parameters of a request (the names and defaults of ``vllm.SamplingParams``).

    Args:
        n: completions generated per prompt.
        temperature: 0 for greedy; logits are divided by it otherwise.
        top_p: nucleus mass kept (1.0 keeps all).
        top_k: most likely tokens kept (0 or -1 keeps all).
        min_p: tokens below ``min_p`` x the top probability are dropped (0 keeps all).
        presence_penalty: subtracted from the logit of every token already generated (OpenAI semantics).
        frequency_penalty: subtracted once per earlier occurrence in the generated tokens.
        repetition_penalty: > 1 discourages tokens of the prompt and the output (Transformers' processor).
        max_tokens: generated tokens at most.
        stop: strings that end the output (not included in the text).
        stop_token_ids: token ids that end the output (the model's EOS ends it too unless ``ignore_eos``).
        ignore_eos: keep generating after EOS.
        seed: per-request seed: the same seed gives the same tokens, however the request is batched.
        logprobs: return the chosen token's log-probability and the ``logprobs`` most likely alternatives.
        skip_special_tokens: leave special tokens out of the text.
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    max_tokens: int = 16
    stop: tuple[str, ...] = field(default=())
    stop_token_ids: tuple[int, ...] = field(default=())
    ignore_eos: bool = False
    seed: int | None = None
    logprobs: int | None = None
    skip_special_tokens: bool = True

    def __post_init__(self):
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        object.__setattr__(self, "stop", stop)
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids or ()))
        _check(isinstance(self.n, int) and 1 <= self.n <= 64, "n", self.n, "use an integer in [1, 64]")
        _check(0 <= self.temperature <= 100, "temperature", self.temperature, "use a number in [0, 100]")
        _check(0 < self.top_p <= 1, "top_p", self.top_p, "use a number in (0, 1]")
        _check(isinstance(self.top_k, int) and self.top_k >= -1, "top_k", self.top_k,
               "use an integer >= 1, or 0 / -1 to keep every token")
        _check(0 <= self.min_p <= 1, "min_p", self.min_p, "use a number in [0, 1]")
        _check(-2 <= self.presence_penalty <= 2, "presence_penalty", self.presence_penalty, "use a number in [-2, 2]")
        _check(-2 <= self.frequency_penalty <= 2, "frequency_penalty", self.frequency_penalty,
               "use a number in [-2, 2]")
        _check(0 < self.repetition_penalty <= 10, "repetition_penalty", self.repetition_penalty,
               "use a number in (0, 10] (1 disables it)")
        _check(isinstance(self.max_tokens, int) and self.max_tokens >= 1, "max_tokens", self.max_tokens,
               "use an integer >= 1")
        _check(len(self.stop) <= 16 and all(isinstance(s, str) and 0 < len(s) <= 256 for s in self.stop), "stop",
               self.stop, "use at most 16 non-empty strings of at most 256 characters")
        _check(all(isinstance(t, int) and t >= 0 for t in self.stop_token_ids), "stop_token_ids", self.stop_token_ids,
               "use non-negative token ids")
        _check(self.seed is None or (isinstance(self.seed, int) and 0 <= self.seed < 2 ** 63), "seed", self.seed,
               "use an integer in [0, 2**63)")
        _check(self.logprobs is None or (isinstance(self.logprobs, int) and 0 <= self.logprobs <= 20), "logprobs",
               self.logprobs, "use an integer in [0, 20]")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1
