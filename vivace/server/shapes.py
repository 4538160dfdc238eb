"""Engine outputs -> OpenAI response bodies: choices, logprobs, usage, stream chunks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vivace.engine.outputs import CompletionOutput, RequestOutput, TokenLogprob
from vivace.engine.tokenizer import Tokenizer
from vivace.server.tool_calls import parse_tool_calls

CHAT = "chat"
TEXT = "text"


@dataclass
class ResponseMeta:
    """What every body and chunk of one response repeats."""

    id: str
    created: int
    model: str
    kind: str  # CHAT or TEXT
    n: int
    tool_calls: bool = False  # parse the choices' text for tool calls (server/tool_calls.py)

    @property
    def object(self) -> str:
        return "chat.completion" if self.kind == CHAT else "text_completion"

    @property
    def chunk_object(self) -> str:
        return "chat.completion.chunk" if self.kind == CHAT else "text_completion"

    def header(self, chunk: bool = False) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": self.chunk_object if chunk else self.object,
            "created": self.created,
            "model": self.model,
        }


@dataclass
class Usage:
    """Token counts over every prompt and choice of one response."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }

    @classmethod
    def of(cls, finals: list[RequestOutput]) -> Usage:
        return cls(
            prompt_tokens=sum(len(o.prompt_token_ids) for o in finals),
            completion_tokens=sum(o.num_generated_tokens for o in finals),
            cached_tokens=sum(o.num_cached_tokens for o in finals),
        )


def finish_reason(completion: CompletionOutput) -> str | None:
    """OpenAI knows stop and length; an aborted choice reads as a stop."""
    reason = completion.finish_reason
    return None if reason is None else ("length" if reason == "length" else "stop")


@dataclass
class LogprobFormatter:
    """Token logprobs in the chat (`content[]`) or completions (`tokens`, `token_logprobs`) layout."""

    tokenizer: Tokenizer
    _cache: dict[int, str] = field(default_factory=dict)

    def token(self, token_id: int) -> str:
        text = self._cache.get(token_id)
        if text is None:
            text = self._cache[token_id] = self.tokenizer.decode([token_id], skip_special_tokens=False)
        return text

    def _entry(self, token_id: int, logprob: float) -> dict[str, Any]:
        text = self.token(token_id)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    def chat(self, items: list[TokenLogprob]) -> dict[str, Any]:
        content = []
        for item in items:
            entry = self._entry(item.token_id, item.logprob)
            entry["top_logprobs"] = [self._entry(t, lp) for t, lp in item.top]
            content.append(entry)
        return {"content": content}

    def text(self, items: list[TokenLogprob], offset: int = 0) -> dict[str, Any]:
        tokens, offsets = [], []
        for item in items:
            offsets.append(offset)
            tokens.append(self.token(item.token_id))
            offset += len(tokens[-1])
        return {
            "tokens": tokens,
            "token_logprobs": [item.logprob for item in items],
            "top_logprobs": [{self.token(t): lp for t, lp in item.top} for item in items],
            "text_offset": offsets,
        }

    def prompt(self, items: list[TokenLogprob]) -> list[dict[str, dict[str, Any]] | None]:
        """vLLM's `prompt_logprobs`: None for the first token, then {token id: logprob, rank, text} per token."""
        out: list[dict[str, dict[str, Any]] | None] = [None]
        for item in items:
            entry = {str(item.token_id): self._ranked(item.token_id, item.logprob, item.rank)}
            for rank, (token_id, logprob) in enumerate(item.top, start=1):
                entry.setdefault(str(token_id), self._ranked(token_id, logprob, rank))
            out.append(entry)
        return out

    def _ranked(self, token_id: int, logprob: float, rank: int | None) -> dict[str, Any]:
        return {"logprob": logprob, "rank": rank, "decoded_token": self.token(token_id)}

    def format(self, kind: str, items: list[TokenLogprob] | None, offset: int = 0) -> dict[str, Any] | None:
        if items is None:
            return None
        return self.chat(items) if kind == CHAT else self.text(items, offset)


def full_body(meta: ResponseMeta, finals: list[RequestOutput], logprobs: LogprobFormatter) -> dict[str, Any]:
    """The non-streaming response for the finished outputs of every prompt, in prompt order."""
    choices = []
    for p, out in enumerate(finals):
        for c in out.outputs:
            choice: dict[str, Any] = {"index": p * meta.n + c.index}
            reason = finish_reason(c)
            if meta.kind == CHAT:
                choice["message"] = {"role": "assistant", "content": c.text}
                if meta.tool_calls:
                    content, calls = parse_tool_calls(c.text)
                    if calls:
                        choice["message"] = {"role": "assistant", "content": content, "tool_calls": calls}
                        reason = "tool_calls" if reason == "stop" else reason
            else:
                choice["text"] = c.text
            choice["logprobs"] = logprobs.format(meta.kind, c.logprobs)
            choice["finish_reason"] = reason
            if meta.kind != CHAT and out.prompt_logprobs is not None:
                choice["prompt_logprobs"] = logprobs.prompt(out.prompt_logprobs)
            choices.append(choice)
    body = {**meta.header(), "choices": choices, "usage": Usage.of(finals).as_dict()}
    if meta.kind == CHAT and finals and finals[0].prompt_logprobs is not None:
        body["prompt_logprobs"] = logprobs.prompt(finals[0].prompt_logprobs)
    return body
