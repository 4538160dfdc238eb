"""LLMEngine: requests in, one scheduled forward pass per `step()`, request outputs back."""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Any

import torch

from vivace.engine.config import EngineConfig, InvalidParameterError, SamplingParams
from vivace.engine.detokenizer import IncrementalDetokenizer
from vivace.engine.loaders import load_model
from vivace.engine.loaders.tokenizer_file import load_tokenizer
from vivace.engine.memory import kv_cache_blocks
from vivace.engine.models.llama import LlamaModel
from vivace.engine.models.random_weights import is_random_spec, load_random_model
from vivace.engine.outputs import CompletionOutput, RequestOutput, TokenLogprob
from vivace.engine.runner import ModelRunner
from vivace.engine.sampling_batch import check_token_ids, make_generator
from vivace.engine.scheduler import Scheduler
from vivace.engine.sequence import Sequence
from vivace.engine.stop_strings import StopStringMatcher

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(eq=False)
class _SeqOutput:
    """Output-side state of one sequence: detokenizer, stop matcher, text and logprobs so far."""

    detok: IncrementalDetokenizer
    stops: StopStringMatcher | None
    text: str = ""
    pending: str = ""  # emitted since the last RequestOutput
    logprobs: list[TokenLogprob] | None = None
    stop_reason: str | int | None = None

    def emit(self, text: str) -> None:
        self.text += text
        self.pending += text


@dataclass(eq=False)
class _Request:
    request_id: str
    prompt: str | None
    prompt_ids: list[int]
    params: SamplingParams
    seqs: list[Sequence]
    stream: bool
    prompt_logprobs: list[float] | None = None
    error: str | None = None

    @property
    def finished(self) -> bool:
        for seq in self.seqs:  # a loop, not all(...): this runs for every streamed request every step
            if not seq.is_finished:
                return False
        return True


class LLMEngine:
    """The synchronous engine core; not thread-safe (AsyncEngine serialises access to it)."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config = config or EngineConfig()
        _check_device(config.device)
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        dtype = _DTYPES[config.resolved_dtype]
        quantization = config.resolved_quantization
        if quantization == "int8" and (dtype is not torch.float32 or config.device != "cpu"):
            raise InvalidParameterError("quantization", "int8 weights run on CPU with dtype float32 only")
        if is_random_spec(config.model):
            loaded = load_random_model(config.model, dtype, config.device, config.tokenizer)
        else:
            loaded = load_model(config.model, torch.float32)
            if config.tokenizer is not None:
                loaded.tokenizer = load_tokenizer(config.tokenizer)
            if config.device != "cpu":  # before the model fuses q/k/v and gate/up, so that happens on the device
                loaded.weights = {name: w.to(config.device, dtype) for name, w in loaded.weights.items()}
        self.model_config = loaded.config
        self.tokenizer = loaded.tokenizer
        self.model = LlamaModel(loaded.config, loaded.weights, dtype, quantization)
        del loaded
        self.max_model_len = min(config.max_model_len or self.model_config.max_position_embeddings, self.model_config.max_position_embeddings)
        self.kv_dtype = _DTYPES[config.resolved_kv_cache_dtype]
        num_blocks = kv_cache_blocks(config, self.model.kv_bytes_per_token(self.kv_dtype), self.max_model_len)
        self.eos_token_ids = list(self.model_config.eos_token_ids)
        self.scheduler = Scheduler(
            num_blocks=num_blocks,
            block_size=config.block_size,
            max_num_seqs=config.max_num_seqs,
            max_num_batched_tokens=config.max_num_batched_tokens,
            max_model_len=self.max_model_len,
            enable_prefix_caching=config.enable_prefix_caching,
        )
        self.runner = ModelRunner(
            self.model, num_blocks, config.block_size, config.device, self.eos_token_ids,
            config.resolved_attention_backend, self.kv_dtype,
            cuda_graphs=config.cuda_graphs, max_num_seqs=config.max_num_seqs, max_model_len=self.max_model_len,
        )
        self._requests: dict[str, _Request] = {}
        self._seq_ids = itertools.count()
        self._arrivals = itertools.count()
        self.num_steps = 0

    # ---- requests -----------------------------------------------------------------------
    def tokenize_prompt(self, prompt: str | list[int]) -> list[int]:
        """Token ids of a prompt given as text (BOS added per the model) or as ids (checked)."""
        if isinstance(prompt, str):
            ids = self.tokenizer.encode(prompt, add_special_tokens=True)
        else:
            ids = list(prompt)
            vocab = self.model_config.vocab_size
            bad = [t for t in ids if not isinstance(t, int) or not 0 <= t < vocab]
            if bad:
                raise InvalidParameterError("prompt", f"token ids must be integers in [0, {vocab}), got {bad[:5]}")
        if not ids:
            raise InvalidParameterError("prompt", "must not be empty")
        return ids

    def validate_request(self, prompt: str | list[int], params: SamplingParams) -> list[int]:
        """The prompt's token ids, or the error add_request would raise; queues nothing."""
        ids = self.tokenize_prompt(prompt)
        max_new = params.max_tokens if params.max_tokens is not None else self.max_model_len - len(ids)
        self.scheduler.check_fits(len(ids), max_new)
        check_token_ids(params, self.model_config.vocab_size)
        return ids

    def add_request(
        self,
        request_id: str,
        prompt: str | list[int],
        params: SamplingParams | None = None,
        *,
        stream: bool = True,
        score_from: int | None = None,
    ) -> None:
        """Validate and queue a request; raises before anything is queued if it can never run.

        `stream=False` reports the request only when finished; `score_from=i` also returns the
        log-probabilities of prompt tokens i.. (used by classification).
        """
        if request_id in self._requests:
            raise InvalidParameterError("request_id", f"{request_id!r} is already running")
        params = params or SamplingParams()
        ids = self.validate_request(prompt, params)
        arrival = next(self._arrivals)
        seqs = []
        for index in range(params.n):
            seed = None if params.seed is None else params.seed + index
            seq = Sequence(
                seq_id=next(self._seq_ids),
                request_id=request_id,
                index=index,
                token_ids=list(ids),
                num_prompt_tokens=len(ids),
                params=params,
                arrival_order=arrival,
                generator=make_generator(seed, self.runner.device),
                score_from=score_from,
            )
            seq.state = _SeqOutput(
                detok=IncrementalDetokenizer(
                    self.tokenizer, skip_special_tokens=params.skip_special_tokens, deferred=not stream and not params.stop
                ),
                stops=StopStringMatcher(params.stop) if params.stop else None,
                logprobs=[] if params.logprobs is not None else None,
            )
            seqs.append(seq)
        request = _Request(request_id, prompt if isinstance(prompt, str) else None, ids, params, seqs, stream)
        if score_from is not None:
            request.prompt_logprobs = []
        self._requests[request_id] = request
        for seq in seqs:
            self.scheduler.add(seq)

    def abort(self, request_id: str) -> RequestOutput | None:
        """Stop a request wherever it is and free everything it held; None if unknown."""
        request = self._requests.pop(request_id, None)
        if request is None:
            return None
        for seq in request.seqs:
            self._finish(seq, "abort")
        return self._output(request)

    def request_ids(self) -> list[str]:
        """Ids of every unfinished request."""
        return list(self._requests)

    def has_unfinished_requests(self) -> bool:
        return bool(self._requests)

    @property
    def num_requests(self) -> int:
        return len(self._requests)

    # ---- one step -----------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        """Schedule and run one forward pass; outputs of streamed requests that advanced, and finished ones."""
        batch = self.scheduler.schedule()
        if batch.is_empty:
            return []
        self.num_steps += 1
        try:
            result = self.runner.execute(batch)
        except Exception as exc:  # a failed step fails its requests, never the engine
            log.exception("engine step failed")
            self.scheduler.invalidate(batch)
            failed = {item.seq.request_id for item in batch.all()}
            outputs = []
            for request_id in failed:
                request = self._requests.pop(request_id)
                request.error = f"{type(exc).__name__}: {exc}"
                for seq in request.seqs:
                    self._finish(seq, "error")
                outputs.append(self._output(request))
            return outputs
        self.scheduler.finish_step(batch)
        touched: dict[str, _Request] = {}
        if result.prompt_scores:
            for item in batch.all():
                scores = result.prompt_scores.get(item.seq.seq_id)
                request = self._requests[item.seq.request_id]
                if scores is not None and item.seq.index == 0 and request.prompt_logprobs is not None:
                    request.prompt_logprobs.extend(scores.logprobs)
        if result.output is not None:
            out = result.output
            for i, item in enumerate(result.sampled):
                seq = item.seq
                if seq.is_finished:
                    continue
                token = out.token_ids[i]
                logprob = None
                if seq.state.logprobs is not None and out.logprobs is not None:
                    top = out.top_logprobs[i] if out.top_logprobs is not None else []
                    logprob = TokenLogprob(token, out.logprobs[i], list(top or []))
                self._append_token(seq, token, logprob)
                touched[seq.request_id] = self._requests[seq.request_id]
        outputs = []
        for request in touched.values():
            finished = request.finished
            if finished:
                del self._requests[request.request_id]
                outputs.append(self._output(request, finished))
            elif request.stream:
                outputs.append(self._output(request, finished))
        return outputs

    def _append_token(self, seq: Sequence, token: int, logprob: TokenLogprob | None) -> None:
        """Add a sampled token, emit its text and finish the sequence if a stop condition holds."""
        seq.token_ids.append(token)
        state: _SeqOutput = seq.state
        params = seq.params
        if logprob is not None:
            state.logprobs.append(logprob)
        if token in params.stop_token_ids:
            state.stop_reason = token
            self._finish(seq, "stop")
            return
        if not params.ignore_eos and token in self.eos_token_ids:
            self._finish(seq, "stop")
            return
        delta = state.detok.add(token)
        if state.stops is not None:
            delta, stopped = state.stops.feed(delta)
            state.emit(delta)
            if stopped:
                state.stop_reason = state.stops.matched
                self._finish(seq, "stop", flush=False)
                return
        else:
            state.emit(delta)
        if (params.max_tokens is not None and seq.num_output_tokens >= params.max_tokens) or seq.num_tokens >= self.max_model_len:
            self._finish(seq, "length")

    def _finish(self, seq: Sequence, reason: str, flush: bool = True) -> None:
        if seq.is_finished:
            return
        state: _SeqOutput = seq.state
        if flush and (reason != "abort" or state.detok.deferred):  # a deferred one has emitted nothing yet
            tail = state.detok.finish()
            if state.stops is not None:
                tail, stopped = state.stops.feed(tail)
                if not stopped:
                    tail += state.stops.flush()
            state.emit(tail)
        self.scheduler.finish(seq, reason)

    def _output(self, request: _Request, finished: bool | None = None) -> RequestOutput:
        completions = []
        for seq in request.seqs:
            state: _SeqOutput = seq.state
            completions.append(
                CompletionOutput(
                    index=seq.index,
                    text=state.text,
                    delta=state.pending,
                    token_ids=seq.output_ids,
                    finish_reason=seq.finish_reason,
                    logprobs=list(state.logprobs) if state.logprobs is not None else None,
                    stop_reason=state.stop_reason,
                )
            )
            state.pending = ""
        return RequestOutput(
            request_id=request.request_id,
            prompt=request.prompt,
            prompt_token_ids=request.prompt_ids,
            outputs=completions,
            finished=request.finished if finished is None else finished,
            num_cached_tokens=request.seqs[0].num_cached_tokens,
            prompt_logprobs=request.prompt_logprobs,
            error=request.error,
        )

    # ---- introspection ------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters for metrics: KV blocks, prompt tokens computed vs reused, queue sizes."""
        s = self.scheduler
        return {
            "num_blocks": s.pool.num_blocks,
            "blocks_in_use": s.pool.num_used,
            "num_waiting": len(s.waiting),
            "num_running": len(s.running),
            "prompt_tokens_computed": s.stats.prompt_tokens_computed,
            "prompt_tokens_reused": s.stats.prompt_tokens_reused,
            "preemptions": s.stats.preemptions,
            "steps": self.num_steps,
        }


def _check_device(device: str) -> None:
    """Raise a clear error, before any loading, when a CUDA device is asked for that is not here."""
    if not device.startswith("cuda"):
        return
    if not torch.cuda.is_available():
        raise InvalidParameterError(
            "device", f"{device!r} was asked for, but torch {torch.__version__} sees no CUDA GPU (a CPU-only build of "
            "torch, or no NVIDIA driver); install a CUDA build of torch, or run on 'cpu'"
        )
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise InvalidParameterError("device", f"{device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def __getattr__(name: str) -> Any:
    # `from vivace.engine.engine import LLM, AsyncEngine` without an import cycle.
    if name == "LLM":
        from vivace.engine.llm import LLM

        return LLM
    if name == "AsyncEngine":
        from vivace.engine.async_engine import AsyncEngine

        return AsyncEngine
    raise AttributeError(name)
