"""LLM: the offline interface (generate, chat, stream, classify) over one LLMEngine."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from vivace.engine.classify import classify_requests, label_probabilities
from vivace.engine.config import EngineConfig, SamplingParams
from vivace.engine.engine import LLMEngine
from vivace.engine.outputs import RequestOutput
from vivace.engine.pooling import EMBEDDING_PARAMS

Prompt = str | list[int]
Messages = list[dict]

_PROGRESS_MIN_REQUESTS = 8  # smaller batches finish too fast for a bar to help


class LLM:
    """Offline generation: `LLM(path).generate(prompts, SamplingParams(...))`."""

    def __init__(self, model: str | None = None, **engine_kwargs: object) -> None:
        self.engine = LLMEngine(EngineConfig(model=model, **engine_kwargs))
        self.tokenizer = self.engine.tokenizer
        self._ids = itertools.count()

    def _next_id(self) -> str:
        return f"llm-{next(self._ids)}"

    @staticmethod
    def _params_for(
        count: int, sampling_params: SamplingParams | Sequence[SamplingParams] | None
    ) -> list[SamplingParams]:
        if sampling_params is None:
            return [SamplingParams()] * count
        if isinstance(sampling_params, SamplingParams):
            return [sampling_params] * count
        params = list(sampling_params)
        if len(params) != count:
            raise ValueError(f"got {len(params)} sampling params for {count} prompts")
        return params

    @staticmethod
    def _loras_for(count: int, lora: str | Sequence[str | None] | None) -> list[str | None]:
        if lora is None or isinstance(lora, str):
            return [lora] * count
        loras = list(lora)
        if len(loras) != count:
            raise ValueError(f"got {len(loras)} LoRA adapters for {count} prompts")
        return loras

    def load_lora(self, name: str, path: str) -> None:
        """Load the PEFT adapter in directory `path` as `name` (the engine needs enable_lora=True)."""
        self.engine.add_lora(name, path)

    def unload_lora(self, name: str) -> None:
        """Unload adapter `name`."""
        self.engine.remove_lora(name)

    def generate_unordered(
        self,
        prompts: Sequence[Prompt],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        pool: bool = False,
        lora: str | Sequence[str | None] | None = None,
    ) -> Iterator[tuple[int, RequestOutput]]:
        """Finished requests in completion order, with their index in `prompts`.

        Every prompt is validated and queued before the first step, so a bad one raises
        before any work starts. `pool=True` makes them embedding requests (see `embed`).
        `lora`: the adapter every prompt runs with, or one per prompt (None = the base model).
        """
        params = self._params_for(len(prompts), sampling_params)
        loras = self._loras_for(len(prompts), lora)
        index_of: dict[str, int] = {}
        try:
            for i, (prompt, p, adapter) in enumerate(zip(prompts, params, loras, strict=True)):
                request_id = self._next_id()
                self.engine.add_request(request_id, prompt, p, stream=False, pool=pool, lora=adapter)
                index_of[request_id] = i
            while index_of:
                for out in self.engine.step():
                    if out.finished:
                        yield index_of.pop(out.request_id), out
        finally:
            for request_id in index_of:  # interrupted: free whatever is left
                self.engine.abort(request_id)

    def embed(self, prompts: Sequence[Prompt]) -> list[list[float]]:
        """Each prompt's embedding: the mean of its final hidden states, L2-normalized (pooling.py)."""
        embeddings: list[list[float]] = [[] for _ in prompts]
        for i, out in self.generate_unordered(prompts, EMBEDDING_PARAMS, pool=True):
            if out.embedding is None:
                raise RuntimeError(f"the engine returned no embedding for prompt {i}: {out.error or 'unknown error'}")
            embeddings[i] = out.embedding
        return embeddings

    def generate(
        self,
        prompts: Prompt | Sequence[Prompt],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        use_tqdm: bool = True,
        lora: str | Sequence[str | None] | None = None,
    ) -> list[RequestOutput]:
        """Generate for every prompt (text or token ids); outputs in input order; `lora` as in generate_unordered."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]  # type: ignore[list-item]
        results: list[RequestOutput | None] = [None] * len(prompts)
        show = use_tqdm and len(prompts) >= _PROGRESS_MIN_REQUESTS
        with Progress(
            TextColumn("generating"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            disable=not show,
            transient=True,
        ) as progress:
            task = progress.add_task("generate", total=len(prompts))
            for i, out in self.generate_unordered(prompts, sampling_params, lora=lora):  # type: ignore[arg-type]
                results[i] = out
                progress.advance(task)
        return results  # type: ignore[return-value]

    def chat(
        self,
        conversations: Messages | Sequence[Messages],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        use_tqdm: bool = True,
        lora: str | Sequence[str | None] | None = None,
    ) -> list[RequestOutput]:
        """Reply to one conversation (a list of messages) or to many."""
        if conversations and isinstance(conversations[0], dict):
            conversations = [conversations]  # type: ignore[list-item]
        prompts = [self.tokenizer.encode_chat(list(c)) for c in conversations]  # type: ignore[arg-type]
        return self.generate(prompts, sampling_params, use_tqdm, lora=lora)

    def stream(
        self, prompt: Prompt, sampling_params: SamplingParams | None = None, lora: str | None = None
    ) -> Iterator[RequestOutput]:
        """One request, yielded after every step that produced text; `outputs[i].delta` is the new text."""
        request_id = self._next_id()
        self.engine.add_request(request_id, prompt, sampling_params, lora=lora)
        finished = False
        try:
            while not finished:
                for out in self.engine.step():
                    if out.request_id == request_id:
                        finished = out.finished
                        yield out
        finally:
            if not finished:
                self.engine.abort(request_id)

    def stream_chat(self, messages: Messages, sampling_params: SamplingParams | None = None) -> Iterator[RequestOutput]:
        """`stream` for a conversation."""
        return self.stream(self.tokenizer.encode_chat(messages), sampling_params)

    def classify(self, text: str, labels: list[str], template: str | None = None) -> dict[str, float]:
        """Probability of each label as the continuation of the prompt built from `text`."""
        requests = classify_requests(self.tokenizer, text, labels, template)
        ids = []
        for prompt_ids, score_from in requests:
            request_id = self._next_id()
            self.engine.add_request(
                request_id,
                prompt_ids,
                SamplingParams(max_tokens=1, temperature=0.0),
                stream=False,
                score_from=score_from,
            )
            ids.append(request_id)
        done: dict[str, RequestOutput] = {}
        while len(done) < len(ids):
            for out in self.engine.step():
                done[out.request_id] = out
        return label_probabilities(labels, [[t.logprob for t in done[i].prompt_logprobs or []] for i in ids])
