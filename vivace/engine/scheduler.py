"""Continuous batching: picks what runs each step under a token budget. Pure Python, no tensors.

Decodes go first (one token each), then unfinished prefills in chunks, then waiting requests in
arrival order. When KV blocks run out, the most recently arrived running sequence is preempted
(its blocks freed, recomputed later), so no request fails for lack of KV space unless it alone
cannot fit, which `check_fits` rejects at admission.

With a proposer (speculative decoding), a decoding sequence may carry proposed tokens: it is
scheduled as a prefill-like chunk of 1 + k rows, only when the blocks for them are free (speculation
never preempts), and after the step its KV is cut back to the tokens the runner accepted.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from vivace.engine.kv_cache_manager import KVCacheManager
from vivace.engine.kv_groups import KVLayout
from vivace.engine.kv_sessions import SessionPins
from vivace.engine.sequence import Sequence, SequenceStatus
from vivace.engine.speculative.tree import DraftTree


class Proposer(Protocol):
    """Guesses a sequence's next tokens (speculative decoding); pure Python, like the scheduler."""

    def propose(self, seq_id: int, tokens: list[int], max_k: int) -> list[int] | DraftTree: ...

    def observe(self, seq_id: int, proposed: int, accepted: int) -> None: ...

    def forget(self, seq_id: int) -> None: ...


def may_speculate(seq: Sequence) -> bool:
    """Whether a sequence may verify proposed tokens: grammar masks, logprobs and pooling need one row per step."""
    params = seq.params
    return params.structured_outputs is None and params.logprobs is None and not seq.pool


class RequestTooLargeError(ValueError):
    """A request can never run: its prompt or its KV needs exceed what the engine has."""


@dataclass
class ScheduledSeq:
    """One sequence's share of a step: tokens [start, start + num_tokens) are computed.

    A speculating sequence's last `len(draft)` rows are proposed tokens, not yet in `seq.token_ids`.
    """

    seq: Sequence
    start: int
    num_tokens: int
    draft: list[int] = field(default_factory=list)
    tree: DraftTree | None = None  # the draft's parent links when it is a tree, not a chain

    @property
    def draft_depth(self) -> int:
        """How many proposed tokens can be accepted at most."""
        return self.tree.depth() if self.tree is not None else len(self.draft)

    def positions(self) -> range | list[int]:
        """Rope positions of the chunk's rows; a tree's nodes sit at the root's position plus their depth."""
        if self.tree is None:
            return range(self.start, self.start + self.num_tokens)
        root = self.start + self.num_tokens - len(self.draft) - 1
        return [*range(self.start, root + 1), *(root + d for d in self.tree.depths())]

    @property
    def samples(self) -> bool:
        """Whether this chunk reaches the end of the sequence, so its last logits are sampled (or verified)."""
        return self.start + self.num_tokens - len(self.draft) == self.seq.num_tokens

    @property
    def input_ids(self) -> list[int]:
        """The token ids of the chunk's rows: the sequence's own, then the proposed ones."""
        end = self.start + self.num_tokens - len(self.draft)
        return self.seq.token_ids[self.start : end] + self.draft if self.draft else self.seq.token_ids[self.start : end]


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
    spec_drafts: int = 0  # verifications of proposed tokens (vLLM's spec_decode_num_drafts)
    spec_draft_tokens: int = 0  # tokens proposed
    spec_accepted_tokens: int = 0  # proposed tokens accepted


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
        proposer: Proposer | None = None,
        sessions: SessionPins | None = None,
        layout: KVLayout | None = None,
    ) -> None:
        """`layout`: the model's KV groups (kv_groups.py); None = one group, every layer over the whole context."""
        self.kv = KVCacheManager(num_blocks, block_size, enable_prefix_caching, sessions, layout)
        self.proposer = proposer
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
        needed = self.kv.max_blocks(total, self.max_num_batched_tokens)
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
        self.kv.expire_sessions()
        if self.kv.windows:  # before any accounting, so every sequence's out-of-window blocks count as free
            for seq in self.running:
                self.kv.release_out_of_window(seq)

        # Running sequences, decodes before prefill chunks so long prompts never stall decodes.
        ordered = sorted(self.running, key=lambda s: (s.num_tokens - s.num_computed_tokens > 1, s.arrival_order))
        for position, seq in enumerate(ordered):
            if seq.status is not SequenceStatus.RUNNING:
                continue  # preempted earlier in this loop
            remaining = seq.num_tokens - seq.num_computed_tokens
            num = min(remaining, budget)
            if num <= 0:
                continue
            if not self._reserve(seq, num, batch, scheduled):
                continue  # it preempted itself
            draft, tree = [], None
            if remaining == 1 and self.proposer is not None:
                # Each sequence after this one may need a block for its own token: drafts leave them one.
                draft, tree = self._draft(seq, budget - num, spare_blocks=len(ordered) - position - 1)
            item = ScheduledSeq(seq, seq.num_computed_tokens, num + len(draft), draft, tree)
            (batch.decodes if remaining == 1 and not draft else batch.prefills).append(item)
            scheduled.add(seq.seq_id)
            budget -= item.num_tokens
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
            start = match.num_blocks * self.block_size
            num = min(seq.num_tokens - start, budget)
            if not self.kv.can_admit(match, start + num):
                # Session pins yield to a request that would otherwise wait with nothing running to free blocks.
                if not self.running and self.kv.release_session_pin():
                    continue
                break
            self.waiting.popleft()
            # A tier block that fails verification leaves fewer blocks valid: compute from there.
            start = self.kv.admit(seq, match, start + num) * self.block_size
            num = min(seq.num_tokens - start, budget)
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
            if self.kv.release_session_pin():
                continue  # a session's pin yields before any running sequence is preempted
            victim = max(
                (s for s in self.running if s.seq_id not in scheduled),
                key=lambda s: s.arrival_order,
            )
            self._preempt(victim, batch)
            if victim is seq:
                return False
        self.kv.grow(seq, needed)
        return True

    def _draft(self, seq: Sequence, budget: int, spare_blocks: int) -> tuple[list[int], DraftTree | None]:
        """Proposed next tokens for a decoding sequence (blocks for them taken) and their tree, if not a chain;
        ([], None) when it should not speculate.

        A tree's nodes each take a row and a cache slot, so `max_k` bounds its size as it does a chain's
        length. Their blocks come only from free ones beyond `spare_blocks`, so speculation preempts nobody.
        """
        params = seq.params
        if not may_speculate(seq):
            return [], None
        max_k = min(budget, self.max_model_len - seq.num_tokens - 1)
        if params.max_tokens is not None:
            max_k = min(max_k, params.max_tokens - seq.num_output_tokens - 1)
        proposal = self.proposer.propose(seq.seq_id, seq.token_ids, max_k)
        tree = None
        if isinstance(proposal, DraftTree):
            tree = proposal.truncated(max(max_k, 0))
            proposal = tree.tokens
            if tree.is_chain:
                tree = None
        if proposal:
            needed = self.kv.blocks_to_grow(seq, seq.num_tokens + len(proposal))
            if needed > self.kv.num_free - spare_blocks * self.kv.num_groups:
                return [], None
            self.kv.grow(seq, needed)
        return proposal, tree if proposal else None

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
        end = item.start + item.num_tokens - len(item.draft)  # proposed tokens are published once accepted
        prompt_end = seq.num_prompt_tokens
        if item.start < prompt_end:
            self.stats.prompt_tokens_computed += min(end, prompt_end) - item.start
        self.kv.publish(seq, end)

    # ---- after the step -----------------------------------------------------------------
    def finish_step(self, batch: ScheduledBatch, accepted: dict[int, int] | None = None) -> None:
        """Advance every scheduled sequence past the tokens it computed.

        `accepted`: seq_id -> how many of a speculating sequence's proposed tokens were accepted;
        the KV of the rejected ones is dropped (its blocks past the next token's freed).
        """
        for item in batch.all():
            seq = item.seq
            if not item.draft:
                seq.num_computed_tokens = item.start + item.num_tokens
                continue
            num_accepted = (accepted or {}).get(seq.seq_id, 0)
            seq.num_computed_tokens = item.start + item.num_tokens - len(item.draft) + num_accepted
            self.kv.truncate(seq, seq.num_computed_tokens + 1)
            self.proposer.observe(seq.seq_id, item.draft_depth, num_accepted)
            self.stats.spec_drafts += 1
            self.stats.spec_draft_tokens += len(item.draft)
            self.stats.spec_accepted_tokens += num_accepted

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
        self.kv.pin_session(seq)
        self.kv.free(seq)
        if self.proposer is not None:
            self.proposer.forget(seq.seq_id)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason

    def invalidate(self, batch: ScheduledBatch) -> None:
        """After a failed step: blocks published by it hold no valid KV, so unpublish them."""
        for item in batch.all():
            self.kv.invalidate(item.seq)
