"""`hf:PATH`: Hugging Face transformers (optional extra `hf`), generating on a worker thread.

PATH is an HF-layout directory or a `.gguf` file (transformers dequantizes it via `gguf_file=`).
Tokens come back through a streamer as ids, so deltas carry exact token counts; stop strings use the
engine's matcher, and leaving early stops generation at the next token. Nothing is downloaded:
models load with `local_files_only=True`.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from vivace.engine.stop_strings import StopStringMatcher
from vivace.providers.base import Delta, GenerationRequest, Provider, ProviderError, Usage
from vivace.providers.thread_stream import iterate_in_thread

_DONE = object()


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ProviderError("hf: providers need transformers; install them with `pip install 'vivace[hf]'`") from None
    return transformers


class _IdStreamer:
    """A transformers streamer that forwards each generated token id (the prompt is skipped)."""

    def __init__(self) -> None:
        self.ids: queue.Queue[object] = queue.Queue()
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            self.ids.put(token)

    def end(self) -> None:
        self.ids.put(_DONE)


class HFProvider(Provider):
    """A transformers causal LM; `device` and `dtype` pick where and how it runs."""

    def __init__(self, path: str, *, device: str = "cpu", dtype: str = "float32", **model_options: Any) -> None:
        transformers = _import_transformers()
        import torch

        self.id = f"hf:{path}"
        if not os.path.exists(path):
            raise ProviderError(f"{self.id}: no such file or directory (models are never downloaded)", status=400)
        if path.endswith(".gguf"):
            directory, gguf = os.path.dirname(os.path.abspath(path)), {"gguf_file": os.path.basename(path)}
        else:
            directory, gguf = path, {}
        self._torch = torch
        self._transformers = transformers
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(directory, local_files_only=True, **gguf)
        self.model = transformers.AutoModelForCausalLM.from_pretrained(
            directory, local_files_only=True, dtype=getattr(torch, dtype), **gguf, **model_options
        ).to(device)
        self.model.eval()
        self.device = device
        eos = self.model.generation_config.eos_token_id
        self.eos_token_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        self._lock = threading.Lock()  # one generate at a time: seeds are process-global in torch

    def __repr__(self) -> str:
        return f"HFProvider(id={self.id!r}, device={self.device!r})"

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        """Token ids: messages through the tokenizer's chat template, or the raw prompt with its special tokens."""
        if request.messages is not None:
            text = self.tokenizer.apply_chat_template(request.messages, add_generation_prompt=True, tokenize=False)
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self.tokenizer(request.prompt)["input_ids"]

    def _generate_kwargs(self, request: GenerationRequest, prompt_len: int) -> dict[str, Any]:
        max_new = request.max_tokens
        if max_new is None:
            max_new = getattr(self.model.config, "max_position_embeddings", 2048) - prompt_len
        kwargs: dict[str, Any] = {"max_new_tokens": max_new, "pad_token_id": next(iter(self.eos_token_ids), None)}
        if request.temperature == 0:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(
                do_sample=True,
                temperature=1.0 if request.temperature is None else request.temperature,
                top_p=1.0 if request.top_p is None else request.top_p,
                top_k=request.top_k or 0,
            )
        if request.ignore_eos:
            kwargs["min_new_tokens"] = max_new  # EOS is masked until max_new tokens exist
        kwargs.update(request.extra)
        return kwargs

    def _run(self, request: GenerationRequest, stop: threading.Event) -> Iterator[Delta]:
        with self._lock:
            ids = self.prompt_ids(request)
            kwargs = self._generate_kwargs(request, len(ids))
            streamer = _IdStreamer()
            halt = threading.Event()  # caller left, or a stop string completed
            torch = self._torch

            class Halt(self._transformers.StoppingCriteria):
                def __call__(self, input_ids: Any, scores: Any, **_: Any) -> Any:
                    done = stop.is_set() or halt.is_set()
                    return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)

            if request.seed is not None:
                self._transformers.set_seed(request.seed)
            failure: list[BaseException] = []

            def generate() -> None:
                try:
                    with torch.inference_mode():
                        self.model.generate(
                            torch.tensor([ids], device=self.device),
                            streamer=streamer,
                            stopping_criteria=self._transformers.StoppingCriteriaList([Halt()]),
                            **kwargs,
                        )
                except BaseException as exc:  # noqa: BLE001 - reported to the caller below
                    failure.append(exc)
                    streamer.end()

            worker = threading.Thread(target=generate, name="vivace-hf-generate", daemon=True)
            worker.start()
            try:
                yield from self._deltas(streamer, halt, len(ids), request)
            finally:
                halt.set()
                worker.join()
            if failure:
                raise ProviderError(f"{self.id}: generate failed: {failure[0]}", status=500) from failure[0]

    def _deltas(
        self, streamer: _IdStreamer, halt: threading.Event, prompt_len: int, request: GenerationRequest
    ) -> Iterator[Delta]:
        matcher = StopStringMatcher(list(request.stop or []))
        generated: list[int] = []
        emitted = ""  # text of `generated` already decoded and passed through the matcher
        pending = 0
        finish = "length"
        while True:
            token = streamer.ids.get()
            if token is _DONE:
                break
            generated.append(token)  # type: ignore[arg-type]
            pending += 1
            if token in self.eos_token_ids and not request.ignore_eos:
                finish = "stop"
                continue
            text = self.tokenizer.decode(generated, skip_special_tokens=True)
            if text.endswith("\ufffd"):  # an unfinished multi-byte character: wait for its next token
                continue
            out, stopped = matcher.feed(text[len(emitted) :])
            emitted = text
            if stopped:
                finish = "stop"
                halt.set()
                yield Delta(out, pending, finish, Usage(prompt_len, len(generated)))
                return
            if out:
                yield Delta(out, pending)
                pending = 0
        tail = matcher.flush()
        yield Delta(tail, pending, finish, Usage(prompt_len, len(generated)))

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """Deltas with exact token counts; the last one has finish_reason and usage."""
        async for delta in iterate_in_thread(lambda stop: self._run(request, stop), name="vivace-hf"):
            yield delta
