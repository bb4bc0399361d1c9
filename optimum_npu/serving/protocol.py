"""The request bodies of the OpenAI endpoints, parsed into validated data before anything runs.

Unknown fields are ignored (as vLLM does); fields of the OpenAI surface this server does not implement are
refused with a 400 that names them when they ask for something (``tools``, ``response_format``...).
"""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from optimum_npu.serving.sampling_params import InvalidParameterError, SamplingParams


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Sampling(BaseModel):
    """Sampling fields shared by both endpoints (OpenAI's plus vLLM's extras)."""

    model_config = ConfigDict(extra="ignore")

    model: str
    n: int = 1
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    stop: Union[str, list[str], None] = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    logit_bias: dict[str, float] | None = None
    skip_special_tokens: bool = True
    return_token_ids: bool = False

    def unsupported(self) -> dict[str, Any]:
        """Fields asking for what this server does not implement (name -> value)."""
        return {"logit_bias": self.logit_bias} if self.logit_bias else {}

    def sampling_params(self, max_tokens: int, logprobs: int | None) -> SamplingParams:
        for name, value in self.unsupported().items():
            raise InvalidParameterError(name, f"{name}={str(value)[:80]} is not supported by this server")
        chosen = {name: getattr(self, name) for name in ("temperature", "top_p", "top_k", "min_p", "presence_penalty",
                                                          "frequency_penalty", "repetition_penalty")
                  if getattr(self, name) is not None}
        return SamplingParams(n=self.n, max_tokens=max_tokens, stop=self.stop or (),
                              stop_token_ids=tuple(self.stop_token_ids or ()), ignore_eos=self.ignore_eos,
                              seed=self.seed, logprobs=logprobs, skip_special_tokens=self.skip_special_tokens,
                              **chosen)


class CompletionRequest(_Sampling):
    """``POST /v1/completions``."""

    prompt: Union[str, list[str], list[int], list[list[int]]]
    max_tokens: int | None = 16
    logprobs: int | None = None
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None

    def unsupported(self) -> dict[str, Any]:
        found = super().unsupported()
        if self.echo:
            found["echo"] = self.echo
        if self.best_of is not None and self.best_of != self.n:
            found["best_of"] = self.best_of
        if self.suffix:
            found["suffix"] = self.suffix
        return found

    def prompts(self) -> list[str | list[int]]:
        """The prompts of the request: texts or token-id lists."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if prompt and all(isinstance(p, int) for p in prompt):
            return [list(prompt)]
        if not prompt:
            raise InvalidParameterError("prompt", "prompt is empty; give a string, a list of strings or token ids")
        return list(prompt)


class ImageURL(BaseModel):
    model_config = ConfigDict(extra="ignore")

    url: str


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    text: str | None = None
    image_url: ImageURL | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: Union[str, list[ContentPart], None] = None

    def text(self, index: int) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise InvalidParameterError(f"messages[{index}].content", f"content part type {part.type[:40]!r} is not "
                                            "supported by a text decoder (text parts only)")
        return "".join(part.text for part in self.content)

    def with_images(self, index: int) -> tuple[str | list[dict], list[tuple[str, str]]]:
        """The content for a vision-language chat template (``text`` and ``image`` parts) and each image's URL with
        the request field it came from."""
        if self.content is None or isinstance(self.content, str):
            return self.content or "", []
        parts, urls = [], []
        for number, part in enumerate(self.content):
            where = f"messages[{index}].content[{number}]"
            if part.type == "text" and part.text is not None:
                parts.append({"type": "text", "text": part.text})
            elif part.type == "image_url" and part.image_url is not None:
                parts.append({"type": "image"})
                urls.append((part.image_url.url, f"{where}.image_url"))
            else:
                raise InvalidParameterError(where, f"content part type {part.type[:40]!r} is not supported: use "
                                                   "'text' or 'image_url' (a base64 data URL)")
        return parts, urls


class ChatCompletionRequest(_Sampling):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None

    def unsupported(self) -> dict[str, Any]:
        found = super().unsupported()
        if self.tools:
            found["tools"] = "tool calling"
        if self.tool_choice not in (None, "none", "auto"):
            found["tool_choice"] = self.tool_choice
        if self.response_format and self.response_format.get("type", "text") != "text":
            found["response_format"] = self.response_format
        return found

    def conversation(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.text(i)} for i, m in enumerate(self.messages)]

    def conversation_with_images(self) -> tuple[list[dict], list[tuple[str, str]]]:
        """The conversation with image parts, and every image URL (in order) with its request field."""
        conversation, urls = [], []
        for index, message in enumerate(self.messages):
            content, found = message.with_images(index)
            conversation.append({"role": message.role, "content": content})
            urls += found
        return conversation, urls


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_generation_prompt: bool = True


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    tokens: list[int]
