"""What the engine hands back per request: text so far, the newest delta, tokens, logprobs, usage."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TokenLogprob:
    """A token's log-probability and its top alternatives (token id, logprob); `rank` (1 = the most
    likely token) is filled for prompt tokens."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)
    rank: int | None = None


@dataclass
class CompletionOutput:
    """One of a request's n choices."""

    index: int
    text: str  # everything emitted so far (stop strings excluded)
    delta: str  # text emitted since the previous output of this request
    token_ids: list[int]
    finish_reason: str | None = None  # "stop" | "length" | "abort" | "error"
    logprobs: list[TokenLogprob] | None = None
    stop_reason: str | int | None = None  # the stop string or token id that ended it

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestOutput:
    """A request's state after a step; `finished` once every choice has finished."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool
    num_cached_tokens: int = 0
    # Prompt tokens from the first scored position on (classification's label tokens, or tokens 1..
    # for SamplingParams.prompt_logprobs), each given the tokens before it.
    prompt_logprobs: list[TokenLogprob] | None = None
    embedding: list[float] | None = None  # pooled prompt hidden states (pooling.py), when asked, once finished
    error: str | None = None

    @property
    def num_generated_tokens(self) -> int:
        return sum(len(o.token_ids) for o in self.outputs)
