"""`local:PATH`: vivace's own engine (an AsyncEngine) behind the provider interface."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from vivace.engine.async_engine import AsyncEngine, EngineDeadError
from vivace.engine.config import InvalidParameterError, SamplingParams
from vivace.engine.outputs import RequestOutput
from vivace.engine.request_params import sampling_params_from_fields
from vivace.providers.base import Delta, GenerationRequest, Provider, ProviderError, Usage

# GenerationRequest fields that are sampling fields (None = not given; max_tokens None = no limit).
_REQUEST_SAMPLING = ("max_tokens", "temperature", "top_p", "top_k", "stop", "seed", "ignore_eos")
# GenerationRequest.extra keys that map straight onto SamplingParams fields.
_EXTRA_SAMPLING = (
    "min_p",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "min_tokens",
    "logit_bias",
    "stop_token_ids",
    "response_format",
    "guided_json",
    "guided_regex",
    "guided_grammar",
    "guided_choice",
    "structured_outputs",
)


def sampling_params_for(request: GenerationRequest) -> SamplingParams:
    """The engine's SamplingParams for a request; bad values raise ProviderError(status=400)."""
    unknown = sorted(set(request.extra) - set(_EXTRA_SAMPLING))
    if unknown:
        raise ProviderError(
            f"local provider does not understand extra field(s) {unknown}; supported: {list(_EXTRA_SAMPLING)}",
            status=400,
        )
    fields = {name: getattr(request, name) for name in _REQUEST_SAMPLING}
    try:
        return sampling_params_from_fields({**fields, **request.extra})
    except InvalidParameterError as exc:
        raise ProviderError(str(exc), status=400) from exc


class LocalProvider(Provider):
    """Wraps a running AsyncEngine; `from_path` loads (and then owns) one."""

    structured_outputs = True

    def __init__(self, engine: AsyncEngine, id: str = "local:", *, owns_engine: bool = False) -> None:
        self.engine = engine
        self.id = id
        self._owns_engine = owns_engine
        self._ids = itertools.count()

    @classmethod
    def from_path(cls, path: str | None, **engine_options: Any) -> LocalProvider:
        """Load a GGUF file or HF directory (None = the packaged model) into an engine this provider owns."""
        from vivace.engine.config import EngineConfig

        engine = AsyncEngine.from_config(EngineConfig(model=path, **engine_options))
        return cls(engine, id=f"local:{path or ''}", owns_engine=True)

    def __repr__(self) -> str:
        return f"LocalProvider(id={self.id!r})"

    def _prompt(self, request: GenerationRequest) -> str | list[int]:
        if request.messages is not None:
            return self.engine.tokenizer.encode_chat(list(request.messages))
        assert request.prompt is not None
        return request.prompt  # the engine encodes raw text itself (BOS per the model)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """Deltas of new text and token counts; the last one carries finish_reason and usage."""
        params = sampling_params_for(request)
        prompt = self._prompt(request)
        request_id = f"provider-{id(self):x}-{next(self._ids)}"
        seen_tokens = 0
        # aclosing: leaving our iteration early must close the engine's iterator too, which aborts it
        async with aclosing(self._outputs(prompt, params, request_id)) as outputs:
            async for out in outputs:
                choice = out.outputs[0]
                new_tokens = len(choice.token_ids) - seen_tokens
                seen_tokens = len(choice.token_ids)
                if not out.finished:
                    if choice.delta or new_tokens:
                        yield Delta(text=choice.delta, tokens=new_tokens)
                    continue
                yield Delta(
                    text=choice.delta,
                    tokens=new_tokens,
                    finish_reason=choice.finish_reason,
                    usage=Usage(len(out.prompt_token_ids), len(choice.token_ids)),
                )

    async def _outputs(
        self, prompt: str | list[int], params: SamplingParams, request_id: str
    ) -> AsyncIterator[RequestOutput]:
        """The engine's outputs with its errors turned into ProviderErrors."""
        try:
            async with aclosing(self.engine.generate(prompt, params, request_id=request_id)) as outputs:
                async for out in outputs:
                    if out.error:
                        raise ProviderError(f"local engine failed the request: {out.error}", status=500)
                    yield out
        except ValueError as exc:  # InvalidParameterError, RequestTooLargeError: the request's fault
            raise ProviderError(str(exc), status=400) from exc
        except EngineDeadError as exc:
            raise ProviderError(str(exc), status=503, retryable=True) from exc

    async def aclose(self) -> None:
        """Shut the engine down if this provider loaded it."""
        if self._owns_engine:
            self.engine.shutdown()
