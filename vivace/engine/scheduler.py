"""Continuous batching: picks what runs each step under a token budget. Pure Python, no tensors.

Decodes go first (one token each), then unfinished prefills in chunks, then waiting requests in
arrival order. When KV blocks run out, the most recently arrived running sequence is preempted
(its blocks freed, recomputed later), so no request fails for lack of KV space unless it alone
cannot fit, which `check_fits` rejects at admission.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from vivace.engine.kv_cache_manager import KVCacheManager
from vivace.engine.sequence import Sequence, SequenceStatus


class RequestTooLargeError(ValueError):
    """A request can never run: its prompt or its KV needs exceed what the engine has."""


@dataclass
class ScheduledSeq:
    """One sequence's share of a step: tokens [start, start + num_tokens) are computed."""

    seq: Sequence
    start: int
    num_tokens: int

    @property
    def samples(self) -> bool:
        """Whether this chunk reaches the end of the sequence, so its last logits are sampled."""
        return self.start + self.num_tokens == self.seq.num_tokens


@dataclass
class ScheduledBatch:
    """What the runner computes in one forward pass: decodes first, then prefill chunks."""

    decodes: list[ScheduledSeq] = field(default_factory=list)
    prefills: list[ScheduledSeq] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return len(self.decodes) + sum(p.num_tokens for p in self.prefills)

    @property
    def is_empty(self) -> bool:
        return not self.decodes and not self.prefills

    def all(self) -> list[ScheduledSeq]:
        return self.decodes + self.prefills


@dataclass
class SchedulerStats:
    """Prompt tokens computed vs reused from the prefix cache, and preemptions."""

    prompt_tokens_computed: int = 0
    prompt_tokens_reused: int = 0  # prefix-cache hits, in tokens
    prefix_cache_queries: int = 0  # prompt tokens looked up in the prefix cache (vLLM's meaning)
    preemptions: int = 0


class Scheduler:
    """Owns the waiting and running queues; every sequence's KV blocks go through its KV cache manager."""

    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        max_model_len: int,
        enable_prefix_caching: bool = True,
    ) -> None:
        self.kv = KVCacheManager(num_blocks, block_size, enable_prefix_caching)
        self.block_size = block_size
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_model_len = max_model_len
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.stats = SchedulerStats()

    # ---- admission ----------------------------------------------------------------------
    def check_fits(self, num_prompt_tokens: int, max_new_tokens: int) -> None:
        """Raise RequestTooLargeError if a request could never run on this engine."""
        if num_prompt_tokens >= self.max_model_len:
            raise RequestTooLargeError(
                f"prompt has {num_prompt_tokens:,} tokens; this engine's context is "
                f"{self.max_model_len:,} (the prompt must leave room for at least one new token)"
            )
        total = min(num_prompt_tokens + max_new_tokens, self.max_model_len)
        needed = self.kv.blocks_for(total)
        if needed > self.kv.num_blocks:
            raise RequestTooLargeError(
                f"request needs {total:,} tokens of KV cache ({needed} blocks) but the cache holds "
                f"{self.kv.num_blocks} blocks ({self.kv.num_blocks * self.block_size:,} tokens); "
                "lower max_tokens or give the KV cache more memory"
            )

    def add(self, seq: Sequence) -> None:
        """Queue a sequence; it is admitted in arrival order."""
        seq.status = SequenceStatus.WAITING
        self.waiting.append(seq)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    # ---- one step -----------------------------------------------------------------------
    def schedule(self) -> ScheduledBatch:
        """Choose the sequences and token counts of the next step."""
        batch = ScheduledBatch()
        budget = self.max_num_batched_tokens
        scheduled: set[int] = set()

        # Running sequences, decodes before prefill chunks so long prompts never stall decodes.
        ordered = sorted(self.running, key=lambda s: (s.num_tokens - s.num_computed_tokens > 1, s.arrival_order))
        for seq in ordered:
            if seq.status is not SequenceStatus.RUNNING:
                continue  # preempted earlier in this loop
            remaining = seq.num_tokens - seq.num_computed_tokens
            num = min(remaining, budget)
            if num <= 0:
                continue
            if not self._reserve(seq, num, batch, scheduled):
                continue  # it preempted itself
            item = ScheduledSeq(seq, seq.num_computed_tokens, num)
            (batch.decodes if remaining == 1 else batch.prefills).append(item)
            scheduled.add(seq.seq_id)
            budget -= num
            self._mark_scheduled(item)

        # Waiting sequences, in arrival order, while budget and sequence slots last.
        deferred: list[Sequence] = []
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            match = self.kv.match_prefix(seq)
            if match.pending:
                # Its next prefix block is being computed by another sequence: wait a step
                # rather than compute the same tokens twice.
                deferred.append(self.waiting.popleft())
                continue
            start = len(match.blocks) * self.block_size
            num = min(seq.num_tokens - start, budget)
            if not self.kv.can_admit(match, start + num):
                break
            self.waiting.popleft()
            self.kv.admit(seq, match, start + num)
            if seq.num_preemptions == 0:
                seq.num_cached_tokens = start
                self.stats.prompt_tokens_reused += start
                if self.kv.enable_prefix_caching:
                    self.stats.prefix_cache_queries += seq.num_prompt_tokens
            seq.num_computed_tokens = start
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            item = ScheduledSeq(seq, start, num)
            batch.prefills.append(item)
            budget -= num
            self._mark_scheduled(item)
        for seq in reversed(deferred):
            self.waiting.appendleft(seq)
        return batch

    def _reserve(self, seq: Sequence, num: int, batch: ScheduledBatch, scheduled: set[int]) -> bool:
        """Give `seq` blocks for `num` more tokens, preempting newer sequences; False if it was preempted."""
        needed = self.kv.blocks_to_grow(seq, seq.num_computed_tokens + num)  # preempting others leaves it unchanged
        while needed > self.kv.num_free:
            victim = max(
                (s for s in self.running if s.seq_id not in scheduled),
                key=lambda s: s.arrival_order,
            )
            self._preempt(victim, batch)
            if victim is seq:
                return False
        self.kv.grow(seq, needed)
        return True

    def _preempt(self, seq: Sequence, batch: ScheduledBatch) -> None:
        self.running.remove(seq)
        self.kv.free(seq)
        seq.num_computed_tokens = 0
        seq.num_preemptions += 1
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)
        batch.preempted.append(seq)
        self.stats.preemptions += 1

    def _mark_scheduled(self, item: ScheduledSeq) -> None:
        """Count prompt work and publish blocks this step fills (its writes precede all reads)."""
        seq = item.seq
        end = item.start + item.num_tokens
        prompt_end = seq.num_prompt_tokens
        if item.start < prompt_end:
            self.stats.prompt_tokens_computed += min(end, prompt_end) - item.start
        self.kv.publish(seq, end)

    # ---- after the step -----------------------------------------------------------------
    def finish_step(self, batch: ScheduledBatch) -> None:
        """Advance every scheduled sequence past the tokens it computed."""
        for item in batch.all():
            item.seq.num_computed_tokens = item.start + item.num_tokens

    def finish(self, seq: Sequence, reason: str) -> None:
        """Retire a sequence (finished, stopped or aborted) and free everything it held."""
        if seq.status is SequenceStatus.FINISHED:
            return
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
        else:
            try:
                self.waiting.remove(seq)
            except ValueError:
                pass
        self.kv.free(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason

    def invalidate(self, batch: ScheduledBatch) -> None:
        """After a failed step: blocks published by it hold no valid KV, so unpublish them."""
        for item in batch.all():
            self.kv.invalidate(item.seq)
