"""Scheduler without a model: token budget, chunked prefill, prefix sharing, preemption, no leaks."""

from __future__ import annotations

import random

import pytest

from vivace.engine.config import SamplingParams
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
