"""`llamacpp:GGUF_PATH`: llama.cpp through llama-cpp-python (optional extra `llamacpp`).

Runs the token loop itself (`Llama.generate`) rather than `create_completion`, so every delta's token
count and the usage are exact, EOS can be ignored (benchmarks), and leaving early stops at the next
token. Chat messages are rendered with the GGUF's own chat template. The Python API serves one
sequence at a time: requests take turns on a lock.
"""

from __future__ import annotations

import codecs
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from vivace.engine.stop_strings import StopStringMatcher
from vivace.providers.base import Delta, GenerationRequest, Provider, ProviderError, Usage
from vivace.providers.thread_stream import iterate_in_thread


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError:
        raise ProviderError(
            "llamacpp: providers need llama-cpp-python; install it with `pip install 'vivace[llamacpp]'`"
        ) from None
    return llama_cpp


@dataclass
class _Step:
    text: str
    tokens: int
    finish_reason: str | None = None
    usage: Usage | None = None


class LlamaCppProvider(Provider):
    """A GGUF model in llama.cpp; `n_ctx`, `n_threads` and other `Llama(...)` options pass through."""

    def __init__(self, path: str, *, n_ctx: int = 2048, n_threads: int | None = None, **llama_options: Any) -> None:
        llama_cpp = _import_llama_cpp()
        from llama_cpp import llama_chat_format

        self.id = f"llamacpp:{path}"
        self._llama_cpp = llama_cpp
        try:
            self.llm = llama_cpp.Llama(
                model_path=path, n_ctx=n_ctx, n_threads=n_threads, verbose=False, **llama_options
            )
        except ValueError as exc:  # llama-cpp-python's "Failed to load model from file"
            raise ProviderError(f"{self.id}: {exc}", status=400) from None
        template = self.llm.metadata.get("tokenizer.chat_template")
        bos, eos = self.llm.token_bos(), self.llm.token_eos()
        self._formatter = (
            None
            if template is None
            else llama_chat_format.Jinja2ChatFormatter(
                template=template, eos_token=self._piece(eos), bos_token=self._piece(bos)
            )
        )
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LlamaCppProvider(id={self.id!r})"

    def _piece(self, token: int) -> str:
        return self.llm.detokenize([token], special=True).decode("utf-8", errors="replace") if token >= 0 else ""

    def prompt_tokens(self, request: GenerationRequest) -> list[int]:
        """The prompt as token ids: raw text with BOS, or messages through the GGUF chat template."""
        if request.prompt is not None:
            return self.llm.tokenize(request.prompt.encode("utf-8"), add_bos=True, special=False)
        if self._formatter is None:
            raise ProviderError(f"{self.id}: this GGUF has no chat template; send a raw prompt", status=400)
        rendered = self._formatter(messages=request.messages)
        return self.llm.tokenize(rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True)

    def _run(self, request: GenerationRequest, stop: threading.Event) -> Iterator[_Step]:
        with self._lock:
            prompt = self.prompt_tokens(request)
            n_ctx = self.llm.n_ctx()
            max_tokens = request.max_tokens if request.max_tokens is not None else n_ctx - len(prompt)
            if len(prompt) + max_tokens > n_ctx:
                raise ProviderError(
                    f"{self.id}: prompt ({len(prompt)} tokens) + max_tokens ({max_tokens}) exceeds "
                    f"the context ({n_ctx}); lower max_tokens or load with a larger n_ctx",
                    status=400,
                )
            if request.seed is not None:
                self.llm.set_seed(request.seed)
            temperature = 1.0 if request.temperature is None else request.temperature
            logit_bias = None
            if request.ignore_eos:
                logit_bias = {self.llm.token_eos(): float("-inf")}
            processors = None if logit_bias is None else self._llama_cpp.LogitsProcessorList([_bias(logit_bias)])
            matcher = StopStringMatcher(list(request.stop or []))
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            vocab = self.llm._model.vocab
            context = list(prompt)
            generated, pending = 0, 0  # pending: tokens whose text is not out yet
            text, finish = "", "length"
            for token in self.llm.generate(
                prompt,
                temp=temperature,
                top_k=request.top_k or 0,
                top_p=1.0 if request.top_p is None else request.top_p,
                min_p=0.0,
                repeat_penalty=1.0,
                logits_processor=processors,
            ):
                if stop.is_set():
                    return
                if not request.ignore_eos and self._llama_cpp.llama_vocab_is_eog(vocab, token):
                    # counted, as vivace's engine and transformers count it (llama-cpp-python's usage does not)
                    generated, pending, finish = generated + 1, pending + 1, "stop"
                    break
                generated += 1
                pending += 1
                text, stopped = matcher.feed(decoder.decode(self.llm.detokenize([token], prev_tokens=context)))
                context.append(token)
                if stopped:
                    finish = "stop"
                    break
                if generated >= max_tokens:
                    break
                if text:
                    yield _Step(text, pending)
                    text, pending = "", 0
            if not matcher.stopped:
                text += matcher.feed(decoder.decode(b"", final=True))[0] + matcher.flush()
            yield _Step(text, pending, finish, Usage(len(prompt), generated))

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """Deltas per detokenized piece with exact token counts; the last one has finish_reason and usage."""
        async for step in iterate_in_thread(lambda stop: self._run(request, stop), name="vivace-llamacpp"):
            yield Delta(text=step.text, tokens=step.tokens, finish_reason=step.finish_reason, usage=step.usage)

    async def aclose(self) -> None:
        """Free the model."""
        with self._lock:
            self.llm.close()


def _bias(bias: dict[int, float]) -> Any:
    def apply(input_ids: Any, scores: Any) -> Any:
        for token, value in bias.items():
            scores[token] += value
        return scores

    return apply
