"""Request bodies of the OpenAI API (and vLLM's extensions) as pydantic models.

Unknown fields are ignored and reported (tolerant.py); a field the server knows but cannot honour
(`best_of` above `n`, `echo`, `suffix`, beam search) is a 400 naming it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from vivace.engine.config import InvalidParameterError, SamplingParams
from vivace.engine.request_params import sampling_params_from_fields
from vivace.server.tolerant import TolerantModel
from vivace.server.tool_calls import Tool, ToolChoice

MAX_N = 16  # choices per request: each one holds its own KV blocks


class StreamOptions(TolerantModel):
    include_usage: bool = False
    continuous_usage_stats: bool = False  # vLLM's: usage (so far) on every chunk


class TextPart(TolerantModel):
    type: Literal["text"]
    text: str


class ChatMessage(TolerantModel):
    """One message; content may be a string or a list of text parts (joined); `developer` reads as `system`."""

    role: str
    content: str | list[TextPart] | None = None
    name: str | None = None

    def as_template_dict(self) -> dict[str, Any]:
        content = self.content
        if isinstance(content, list):
            content = "".join(part.text for part in content)
        message = {"role": "system" if self.role == "developer" else self.role, "content": content or ""}
        for key in ("tool_calls", "tool_call_id"):  # tool-call history (server/tool_calls.py renders it)
            if (self.model_extra or {}).get(key) is not None:
                message[key] = self.model_extra[key]
        return message


class _SamplingRequest(TolerantModel):
    """Fields shared by chat completions and completions."""

    model: str | None = None  # None: the served model
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
    prompt_logprobs: int | None = None  # vLLM's: every prompt token's logprob plus top-k alternatives
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    # vivace's extension: the conversation this request continues; its KV blocks stay pinned on the
    # engine for `--session-ttl` seconds after it (`user` serves when it is absent).
    session_id: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    # Structured outputs (OpenAI's response_format, vLLM's guided_* and structured_outputs).
    response_format: dict[str, Any] | None = None
    guided_json: dict[str, Any] | str | None = None
    guided_regex: str | None = None
    guided_grammar: str | None = None
    guided_choice: list[str] | None = None
    structured_outputs: dict[str, Any] | None = None

    # Known, honoured only at their no-op values (vLLM's benchmark client sends best_of=1).
    best_of: int | None = None
    use_beam_search: bool = False

    @property
    def session(self) -> str | None:
        """The session whose KV blocks this request's pin: `session_id`, else `user`."""
        return self.session_id or self.user

    @property
    def include_usage(self) -> bool:
        return self.stream and self.stream_options is not None and self.stream_options.include_usage

    @property
    def continuous_usage(self) -> bool:
        """Whether every streamed chunk carries the usage so far (vLLM's `continuous_usage_stats`)."""
        return self.stream and self.stream_options is not None and self.stream_options.continuous_usage_stats

    def check_honourable(self) -> None:
        """Raise InvalidParameterError for a known field set to something the server cannot do."""
        if self.best_of is not None and self.best_of != self.n:
            raise InvalidParameterError("best_of", f"only best_of == n ({self.n}) is supported, got {self.best_of}")
        if self.use_beam_search:
            raise InvalidParameterError("use_beam_search", "beam search is not supported")

    def sampling_params(self) -> SamplingParams:
        """The engine's SamplingParams; bad values, and known fields it cannot honour, raise
        InvalidParameterError naming the field."""
        self.check_honourable()
        declared = set(type(self).model_fields) - _NOT_SAMPLING
        return sampling_params_from_fields(self.model_dump(include=declared))


# Declared fields that are not sampling fields; every other one goes to sampling_params_from_fields,
# which rejects names it does not know (so a new declared field cannot be silently dropped).
_NOT_SAMPLING = {
    "model",
    "messages",
    "prompt",
    "user",
    "session_id",
    "stream",
    "stream_options",
    "best_of",
    "use_beam_search",
    "echo",
    "suffix",
    "add_generation_prompt",
    "continue_final_message",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
}


class ChatPromptFields(TolerantModel):
    """A conversation and how its prompt ends; shared by chat completions and /tokenize."""

    messages: list[ChatMessage] = Field(min_length=1)
    # vLLM's: end the prompt with the assistant header (default), or leave the last (assistant)
    # message open so the reply continues it.
    add_generation_prompt: bool = True
    continue_final_message: bool = False

    def check_chat_ending(self) -> None:
        """Raise InvalidParameterError when the two endings are combined or there is nothing to continue."""
        if self.continue_final_message and self.add_generation_prompt:
            raise InvalidParameterError(
                "continue_final_message",
                "needs add_generation_prompt set to false (the two end the prompt differently)",
            )
        if self.continue_final_message and self.messages[-1].role != "assistant":
            raise InvalidParameterError(
                "continue_final_message", "the last message must be the assistant's to continue"
            )


class ChatCompletionRequest(ChatPromptFields, _SamplingRequest):
    """POST /v1/chat/completions."""

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
    echo: bool = False  # known, not supported
    suffix: str | None = None  # known, not supported

    def check_honourable(self) -> None:
        super().check_honourable()
        if self.echo:
            raise InvalidParameterError("echo", "echoing the prompt is not supported")
        if self.suffix:
            raise InvalidParameterError("suffix", "suffix (insertion) is not supported")

    def prompts(self) -> list[str | list[int]]:
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if not prompt:
            raise InvalidParameterError("prompt", "must not be empty")
        if isinstance(prompt[0], int):
            return [list(prompt)]  # type: ignore[arg-type]
        return list(prompt)  # type: ignore[arg-type]


class ClassifyRequest(TolerantModel):
    """POST /v1/classify: probability of each label for a text.

    Either `{text, labels, template?}` or LLaMbA's `{prompt, question, validResponses}`.
    """

    model: str | None = None
    text: str | None = None
    labels: list[str] | None = None
    template: str | None = None
    prompt: str | None = None
    question: str | None = None
    validResponses: list[str] | None = None  # noqa: N815 (LLaMbA's field name)
