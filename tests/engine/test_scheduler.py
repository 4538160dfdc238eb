"""Scheduler without a model: token budget, chunked prefill, prefix sharing, preemption, no leaks,
sliding-window KV groups."""

from __future__ import annotations

import random

import pytest

from vivace.engine.config import SamplingParams
from vivace.engine.kv_groups import NULL_BLOCK, KVLayout, kv_layout, skipped_blocks
from vivace.engine.scheduler import RequestTooLargeError, Scheduler
from vivace.engine.sequence import Sequence, SequenceStatus

BS = 4


def make_seq(i: int, tokens: list[int], max_tokens: int = 8) -> Sequence:
    return Sequence(
        seq_id=i,
        request_id=f"r{i}",
        index=0,
        token_ids=list(tokens),
        num_prompt_tokens=len(tokens),
        params=SamplingParams(max_tokens=max_tokens),
        arrival_order=i,
    )


def make_scheduler(num_blocks: int = 64, budget: int = 16, max_seqs: int = 8, prefix: bool = True) -> Scheduler:
    return Scheduler(num_blocks, BS, max_seqs, budget, max_model_len=256, enable_prefix_caching=prefix)


def run_step(s: Scheduler, rng: random.Random | None = None) -> list[Sequence]:
    """Simulate the runner: advance, append a token to sampling sequences, finish at max_tokens."""
    batch = s.schedule()
    s.finish_step(batch)
    done = []
    for item in batch.all():
        seq = item.seq
        if item.samples:
            seq.token_ids.append(rng.randrange(100) if rng else 7)
            if seq.num_output_tokens >= seq.params.max_tokens:
                s.finish(seq, "length")
                done.append(seq)
    return done


def test_budget_and_chunked_prefill_never_stall_decodes() -> None:
    s = make_scheduler(budget=8)
    short = make_seq(0, [1, 2, 3])
    s.add(short)
    run_step(s)  # short's prefill; now decoding
    long = make_seq(1, list(range(100, 130)))
    s.add(long)
    for _ in range(3):
        batch = s.schedule()
        assert batch.num_tokens <= 8
        assert [d.seq for d in batch.decodes] == [short]  # the decode always runs
        chunk = [p for p in batch.prefills if p.seq is long]
        assert chunk and chunk[0].num_tokens == 7  # the rest of the budget goes to the long prompt
        assert not chunk[0].samples
        s.finish_step(batch)
        short.token_ids.append(5)


def test_max_num_seqs() -> None:
    s = make_scheduler(max_seqs=2, budget=64)
    for i in range(4):
        s.add(make_seq(i, [i] * 5))
    batch = s.schedule()
    assert len(batch.prefills) == 2 and len(s.waiting) == 2


def test_same_step_requests_share_prefix_once() -> None:
    s = make_scheduler(budget=256)
    prefix = list(range(40))  # 10 full blocks
    seqs = [make_seq(i, prefix + [1000 + i, 2000 + i]) for i in range(6)]
    for q in seqs:
        s.add(q)
    total_computed = 0
    while s.has_work:
        batch = s.schedule()
        total_computed += sum(p.num_tokens for p in batch.prefills if p.start < p.seq.num_prompt_tokens)
        s.finish_step(batch)
        for item in batch.all():
            if item.samples:
                s.finish(item.seq, "stop")
    # The shared 40 tokens are computed once; each request computes its own 2 tokens.
    assert total_computed == 40 + 6 * 2
    assert s.stats.prompt_tokens_reused == 5 * 40
    assert s.kv.num_used == 0


def test_preemption_when_blocks_run_out_and_no_leaks() -> None:
    rng = random.Random(0)
    s = make_scheduler(num_blocks=12, budget=32, max_seqs=8)
    seqs = [
        make_seq(i, [rng.randrange(100) for _ in range(rng.randint(3, 12))], max_tokens=rng.randint(4, 20))
        for i in range(10)
    ]
    for q in seqs:
        s.check_fits(q.num_prompt_tokens, q.params.max_tokens)
        s.add(q)
    finished = []
    for _ in range(1000):
        if not s.has_work:
            break
        finished += run_step(s, rng)
        assert s.kv.num_used <= 12
        for q in s.running:  # every full block a running sequence has computed is published, also after a preemption
            assert all(s.kv.pool.computed[block] for block in q.block_table[: q.num_computed_tokens // BS])
    assert len(finished) == 10
    assert all(q.status is SequenceStatus.FINISHED and q.num_output_tokens == q.params.max_tokens for q in seqs)
    assert s.stats.preemptions > 0
    assert s.kv.num_used == 0


def test_request_too_large_is_rejected_at_admission() -> None:
    s = make_scheduler(num_blocks=4)
    with pytest.raises(RequestTooLargeError, match="16 tokens"):
        s.check_fits(10, 20)  # needs 30 tokens of KV, the cache holds 16
    with pytest.raises(RequestTooLargeError, match="context"):
        s.check_fits(256, 1)


def test_abort_mid_prefill_frees_blocks() -> None:
    s = make_scheduler(budget=4)
    q = make_seq(0, list(range(30)))
    s.add(q)
    s.finish_step(s.schedule())
    assert s.kv.num_used > 0
    s.finish(q, "abort")
    assert s.kv.num_used == 0 and not s.running
    # An aborted prefill's unfinished blocks are not offered to later requests.
    q2 = make_seq(1, list(range(30)))
    s.add(q2)
    batch = s.schedule()
    assert batch.prefills[0].start == 4  # only the block that was actually computed is reused


class _FixedProposer:
    """Proposes the same tokens every step and records what was verified."""

    def __init__(self, tokens: list[int]) -> None:
        self.tokens = tokens
        self.observed: list[tuple[int, int, int]] = []

    def propose(self, seq_id: int, tokens: list[int], max_k: int) -> list[int]:
        return self.tokens[:max_k]

    def observe(self, seq_id: int, proposed: int, accepted: int) -> None:
        self.observed.append((seq_id, proposed, accepted))

    def forget(self, seq_id: int) -> None:
        pass


def test_speculating_sequence_gets_rows_and_blocks_then_keeps_only_accepted_kv():
    proposer = _FixedProposer([11, 12, 13, 14, 15, 16])
    s = Scheduler(64, BS, 8, 64, max_model_len=256, proposer=proposer)
    seq = make_seq(0, list(range(1, 7)), max_tokens=20)  # 6 prompt tokens
    s.add(seq)
    run_step(s)  # prefill; 7 tokens, 6 computed
    batch = s.schedule()
    (item,) = batch.prefills  # a decode with a draft is a prefill-like chunk
    assert not batch.decodes
    assert (item.start, item.num_tokens, item.draft) == (6, 7, [11, 12, 13, 14, 15, 16])
    assert item.samples and item.input_ids == [7, 11, 12, 13, 14, 15, 16]
    assert len(seq.block_table) == 4  # positions 0..12 in blocks of 4
    assert seq.num_published_blocks == 1  # proposed tokens are not published: only 7 real tokens
    s.finish_step(batch, {seq.seq_id: 2})  # two accepted: position 6 and two drafts computed
    assert seq.num_computed_tokens == 9
    assert len(seq.block_table) == 3  # blocks for 10 tokens (the next token's slot included); the rest freed
    assert s.kv.num_used == 3
    assert proposer.observed == [(0, 6, 2)]
    assert (s.stats.spec_drafts, s.stats.spec_draft_tokens, s.stats.spec_accepted_tokens) == (1, 6, 2)
    s.finish(seq, "abort")
    assert s.kv.num_used == 0


def test_drafts_respect_max_tokens_context_and_free_blocks_and_never_preempt():
    proposer = _FixedProposer([9] * 8)
    s = Scheduler(4, BS, 8, 64, max_model_len=256, proposer=proposer)
    a, b = make_seq(0, [1, 2, 3], max_tokens=4), make_seq(1, [4, 5, 6], max_tokens=40)
    s.add(a)
    s.add(b)
    run_step(s)  # both prefills, one block each; each has its first token
    batch = s.schedule()
    drafts = {item.seq.seq_id: item.draft for item in batch.all()}
    # a may emit 4 tokens: 1 already, so at most 2 drafts (+1 bonus); b's drafts fit the free blocks only.
    assert drafts[0] == [9, 9]
    assert drafts[1] == []  # its 8 drafts need 2 more blocks; 1 is free, and speculation preempts nobody
    assert s.stats.preemptions == 0 and a.status is b.status is SequenceStatus.RUNNING
    near_end = Scheduler(64, BS, 8, 64, max_model_len=8, proposer=proposer)
    c = make_seq(2, [1, 2, 3, 4, 5], max_tokens=100)
    near_end.add(c)
    run_step(near_end)
    (item,) = near_end.schedule().all()
    assert item.draft == [9]  # 6 tokens + 1 draft + the bonus token = the 8-token context


def _hybrid_scheduler(num_blocks: int, budget: int, layout: KVLayout) -> Scheduler:
    return Scheduler(num_blocks, BS, 8, budget, max_model_len=256, layout=layout)


def test_sliding_window_groups_under_preemption_hold_only_their_windows_and_leak_nothing() -> None:
    """A random workload longer than the window on a pool too small for the whole contexts of all groups."""
    window = 6
    rng = random.Random(1)
    s = _hybrid_scheduler(50, 12, kv_layout([None, window, window]))
    prefix = [rng.randrange(100) for _ in range(20)]  # shared by some prompts: prefix hits across the window
    seqs = []
    for i in range(12):
        own = [rng.randrange(100) for _ in range(rng.randint(3, 30))]
        seqs.append(make_seq(i, (prefix if i % 3 == 0 else []) + own, max_tokens=rng.randint(4, 30)))
    for q in seqs:
        s.check_fits(q.num_prompt_tokens, q.params.max_tokens)
        s.add(q)
    finished = []
    for _ in range(2000):
        if not s.has_work:
            break
        batch = s.schedule()
        kv = s.kv
        held: dict[int, int] = {}
        for q in s.running:
            tables = kv.tables(q)
            assert len({len(t) for t in tables}) == 1  # block i means the same tokens in every group
            skipped = skipped_blocks(q.num_computed_tokens, window, BS)
            for table in tables[1:]:
                # Released exactly the blocks no query from here on sees (the admitted ones may have
                # come from the cache with nulls already in place).
                assert all(b == NULL_BLOCK for b in table[:skipped]) and NULL_BLOCK not in table[skipped:]
            assert NULL_BLOCK not in tables[0]
            for table in tables:
                for b in table:
                    if b != NULL_BLOCK:
                        held[b] = held.get(b, 0) + 1
        assert {b: c for b, c in enumerate(kv.pool.ref_counts) if c} == held
        s.finish_step(batch)
        for item in batch.all():
            if item.samples:
                item.seq.token_ids.append(rng.randrange(100))
                if item.seq.num_output_tokens >= item.seq.params.max_tokens:
                    s.finish(item.seq, "length")
                    finished.append(item.seq)
    assert len(finished) == 12 and s.kv.num_used == 0
    assert s.stats.preemptions > 0 and s.stats.prompt_tokens_reused > 0


def test_window_groups_admit_what_one_table_for_every_layer_could_not() -> None:
    window = 6
    hybrid = _hybrid_scheduler(30, 8, kv_layout([None, window, window]))
    hybrid.check_fits(60, 20)  # 20 global blocks + 2 x (ceil((5 + 8) / 4) + 1 = 5) = 30
    # The same memory as one table for every layer: blocks of three layers, a third as many.
    single = _hybrid_scheduler(10, 8, kv_layout([None, None, None]))
    with pytest.raises(RequestTooLargeError):
        single.check_fits(60, 20)
    seq = make_seq(0, list(range(60)), max_tokens=20)
    hybrid.add(seq)
    peak = 0
    while hybrid.has_work:
        run_step(hybrid)
        peak = max(peak, hybrid.kv.num_used)
    assert seq.num_output_tokens == 20 and hybrid.stats.preemptions == 0
    assert peak <= 30 and hybrid.kv.num_used == 0
