"""Output processing: sampled tokens -> text (incremental detokenization), stop conditions, logprobs and
RequestOutput objects. The engine core only schedules and steps; everything a request sees is built here.

Per-sequence output state is keyed by sequence id; a sequence this processor finishes is retired
through the `finish_seq` callback (the scheduler's), so its KV blocks are freed at once. A constrained
sequence's grammar matcher (structured outputs) is part of that state: it advances with each appended
token (a preempted sequence keeps its tokens, so recomputing it leaves the matcher right), and the
sequence finishes with "stop" when its grammar is complete.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vivace.engine.config import SamplingParams
from vivace.engine.detokenizer import IncrementalDetokenizer
from vivace.engine.outputs import CompletionOutput, RequestOutput, TokenLogprob
from vivace.engine.pooling import mean_normalized
from vivace.engine.sequence import Sequence
from vivace.engine.stop_strings import StopStringMatcher
from vivace.engine.tokenizer import Tokenizer

if TYPE_CHECKING:
    from vivace.engine.runner import StepResult


@dataclass(eq=False)
class _SeqOutput:
    """Output-side state of one sequence: detokenizer, stop matcher, text and logprobs so far."""

    detok: IncrementalDetokenizer
    stops: StopStringMatcher | None
    text: str = ""
    pending: str = ""  # emitted since the last RequestOutput
    logprobs: list[TokenLogprob] | None = None
    stop_reason: str | int | None = None
    matcher: Any = None  # llguidance.LLMatcher of a constrained sequence

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
    prompt_logprobs: list[TokenLogprob] | None = None
    pools: bool = False  # the request asked for an embedding
    pooled_total: Any = None  # running sum of its prompt's final hidden states (a tensor)
    pooled_count: int = 0
    error: str | None = None

    @property
    def finished(self) -> bool:
        for seq in self.seqs:  # a loop, not all(...): this runs for every streamed request every step
            if not seq.is_finished:
                return False
        return True


class OutputProcessor:
    """Turns each step's sampled tokens into RequestOutputs; owns every unfinished request's output state."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        eos_token_ids: list[int],
        max_model_len: int,
        finish_seq: Callable[[Sequence, str], None],
    ) -> None:
        self.tokenizer = tokenizer
        self.eos_token_ids = eos_token_ids
        self.max_model_len = max_model_len
        self._finish_seq = finish_seq
        self._requests: dict[str, _Request] = {}
        self._states: dict[int, _SeqOutput] = {}  # seq_id -> its output state
        self.num_constrained = 0  # unfinished requests with structured outputs

    # ---- requests -----------------------------------------------------------------------
    def __contains__(self, request_id: str) -> bool:
        return request_id in self._requests

    def __len__(self) -> int:
        return len(self._requests)

    def request_ids(self) -> list[str]:
        """Ids of every unfinished request."""
        return list(self._requests)

    def add_request(
        self,
        request_id: str,
        prompt: str | None,
        prompt_ids: list[int],
        params: SamplingParams,
        seqs: list[Sequence],
        *,
        stream: bool,
        scores_prompt: bool,
        matchers: list[Any] | None = None,
        pools: bool = False,
    ) -> None:
        """Start tracking a request's sequences (already queued in the scheduler by the caller).

        `matchers`: one grammar matcher per sequence for a constrained request.
        """
        request = _Request(request_id, prompt, prompt_ids, params, seqs, stream, pools=pools)
        if scores_prompt:
            request.prompt_logprobs = []
        if matchers is not None:
            self.num_constrained += 1
        for i, seq in enumerate(seqs):
            state = _SeqOutput(
                detok=IncrementalDetokenizer(
                    self.tokenizer,
                    skip_special_tokens=params.skip_special_tokens,
                    deferred=not stream and not params.stop,
                ),
                stops=StopStringMatcher(params.stop) if params.stop else None,
                logprobs=[] if params.logprobs is not None else None,
                matcher=None if matchers is None else matchers[i],
            )
            self._states[seq.seq_id] = state
        self._requests[request_id] = request

    def matcher_of(self, seq: Sequence) -> Any:
        """The grammar matcher of a constrained sequence, None for an unconstrained one."""
        return self._states[seq.seq_id].matcher

    def abort(self, request_id: str) -> RequestOutput | None:
        """Finish every sequence of a request as aborted; its final output, or None if unknown."""
        request = self._requests.get(request_id)
        if request is None:
            return None
        for seq in request.seqs:
            self._finish(seq, "abort")
        return self._retire(request)

    def fail(self, request_ids: set[str], error: str) -> list[RequestOutput]:
        """Finish these requests with an error (their step failed); their final outputs."""
        outputs = []
        for request_id in request_ids:
            request = self._requests[request_id]
            request.error = error
            for seq in request.seqs:
                self._finish(seq, "error")
            outputs.append(self._retire(request))
        return outputs

    # ---- one step -----------------------------------------------------------------------
    def process(self, result: StepResult) -> list[RequestOutput]:
        """Append the step's tokens; outputs of streamed requests that advanced, and of finished ones."""
        for scores in result.prompt_scores:
            seq = scores.seq
            request = self._requests[seq.request_id]
            if seq.index == 0 and request.prompt_logprobs is not None:
                # By position: a sequence recomputed after preemption scores its prompt again.
                del request.prompt_logprobs[scores.first - max(seq.score_from, 1) :]
                request.prompt_logprobs.extend(scores.logprobs)
        for chunk in result.pooled:
            request = self._requests[chunk.seq.request_id]
            if chunk.start == 0:  # the first chunk, or a preempted sequence recomputing from the start
                request.pooled_total, request.pooled_count = chunk.total, chunk.count
            else:
                request.pooled_total = request.pooled_total + chunk.total
                request.pooled_count += chunk.count
        touched: dict[str, _Request] = {}
        out = result.output
        if out is not None:
            for i, item in enumerate(result.sampled):
                seq = item.seq
                if seq.is_finished:
                    continue
                state = self._states[seq.seq_id]
                token = out.token_ids[i]
                logprob = None
                if state.logprobs is not None and out.logprobs is not None:
                    top = out.top_logprobs[i] if out.top_logprobs is not None else []
                    logprob = TokenLogprob(token, out.logprobs[i], list(top or []))
                self._append_token(seq, state, token, logprob)
                touched[seq.request_id] = self._requests[seq.request_id]
        for verified in result.verified:
            seq = verified.item.seq
            state = self._states[seq.seq_id]
            for token in verified.token_ids:  # one at a time: a stop condition ends them where it holds
                if seq.is_finished:
                    break
                self._append_token(seq, state, token, None)
            touched[seq.request_id] = self._requests[seq.request_id]
        outputs = []
        for request in touched.values():
            if request.finished:
                outputs.append(self._retire(request))
            elif request.stream:
                outputs.append(self._output(request, False))
        return outputs

    def _append_token(self, seq: Sequence, state: _SeqOutput, token: int, logprob: TokenLogprob | None) -> None:
        """Add a sampled token, emit its text and finish the sequence if a stop condition holds."""
        seq.token_ids.append(token)
        params = seq.params
        if logprob is not None:
            state.logprobs.append(logprob)  # type: ignore[union-attr]
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
        if state.matcher is not None:
            state.matcher.consume_token(token)
            if state.matcher.is_stopped():  # the grammar is complete: nothing but EOS could follow
                self._finish(seq, "stop")
                return
        if (
            params.max_tokens is not None and seq.num_output_tokens >= params.max_tokens
        ) or seq.num_tokens >= self.max_model_len:
            self._finish(seq, "length")

    def _finish(self, seq: Sequence, reason: str, flush: bool = True) -> None:
        if seq.is_finished:
            return
        state = self._states[seq.seq_id]
        if flush and (reason != "abort" or state.detok.deferred):  # a deferred one has emitted nothing yet
            tail = state.detok.finish()
            if state.stops is not None:
                tail, stopped = state.stops.feed(tail)
                if not stopped:
                    tail += state.stops.flush()
            state.emit(tail)
        self._finish_seq(seq, reason)

    def _retire(self, request: _Request) -> RequestOutput:
        """The final output of a finished request, whose state is then forgotten."""
        del self._requests[request.request_id]
        output = self._output(request, True)
        if self._states[request.seqs[0].seq_id].matcher is not None:
            self.num_constrained -= 1
        for seq in request.seqs:
            del self._states[seq.seq_id]
        return output

    def _output(self, request: _Request, finished: bool) -> RequestOutput:
        completions = []
        for seq in request.seqs:
            state = self._states[seq.seq_id]
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
            finished=finished,
            num_cached_tokens=request.seqs[0].num_cached_tokens,
            prompt_logprobs=request.prompt_logprobs,
            embedding=(
                mean_normalized(request.pooled_total, request.pooled_count)
                if finished and request.pools and request.pooled_count == len(request.prompt_ids)
                else None
            ),
            error=request.error,
        )
