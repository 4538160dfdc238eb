"""Request bodies of the OpenAI API as pydantic models; unknown fields are rejected by name."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vivace.engine.config import InvalidParameterError, SamplingParams
from vivace.engine.request_params import sampling_params_from_fields
from vivace.server.tool_calls import Tool, ToolChoice

MAX_N = 16  # choices per request: each one holds its own KV blocks


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Strict):
    include_usage: bool = False


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One message; content may be a string or a list of text parts (joined)."""

    model_config = ConfigDict(extra="allow")  # clients echo back fields such as tool_calls

    role: str
    content: str | list[TextPart] | None = None
    name: str | None = None

    def as_template_dict(self) -> dict[str, Any]:
        content = self.content
        if isinstance(content, list):
            content = "".join(part.text for part in content)
        message = {"role": self.role, "content": content or ""}
        for key in ("tool_calls", "tool_call_id"):  # tool-call history (server/tool_calls.py renders it)
            if (self.model_extra or {}).get(key) is not None:
                message[key] = self.model_extra[key]
        return message


class _SamplingRequest(_Strict):
    """Fields shared by chat completions and completions."""

    model: str
    n: int = Field(1, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    ignore_eos: bool | None = None  # vLLM's extensions, which benchmark clients send
    min_tokens: int | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    # Structured outputs (OpenAI's response_format, vLLM's guided_* and structured_outputs).
    response_format: dict[str, Any] | None = None
    guided_json: dict[str, Any] | str | None = None
    guided_regex: str | None = None
    guided_grammar: str | None = None
    guided_choice: list[str] | None = None
    structured_outputs: dict[str, Any] | None = None

    @property
    def include_usage(self) -> bool:
        return self.stream and self.stream_options is not None and self.stream_options.include_usage

    def sampling_params(self) -> SamplingParams:
        """The engine's SamplingParams; bad values raise InvalidParameterError naming the field."""
        return sampling_params_from_fields(self.model_dump(exclude=_NOT_SAMPLING))


# Request fields that are not sampling fields; every other one goes to sampling_params_from_fields,
# which rejects names it does not know (so a new field cannot be silently ignored).
_NOT_SAMPLING = {
    "model",
    "messages",
    "prompt",
    "user",
    "stream",
    "stream_options",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
}


class ChatCompletionRequest(_SamplingRequest):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool = True


class CompletionRequest(_SamplingRequest):
    """POST /v1/completions; prompt is text, a list of texts, token ids or a list of token-id lists."""

    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = None

    def prompts(self) -> list[str | list[int]]:
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if not prompt:
            raise InvalidParameterError("prompt", "must not be empty")
        if isinstance(prompt[0], int):
            return [list(prompt)]  # type: ignore[arg-type]
        return list(prompt)  # type: ignore[arg-type]


class ClassifyRequest(_Strict):
    """POST /v1/classify: probability of each label for a text."""

    model: str
    text: str
    labels: list[str]
    template: str | None = None
