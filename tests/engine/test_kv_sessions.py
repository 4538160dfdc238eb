"""Session pins and the session tier behind the scheduler, without a model: what survives pressure, what expires,
what yields, what is restored, and that no block leaks."""

from __future__ import annotations

import torch

from tests.engine.test_scheduler import BS, make_seq, run_step
from vivace.engine.kv_cache_manager import block_hash
from vivace.engine.kv_sessions import SessionPins
from vivace.engine.kv_tier import KVTier
from vivace.engine.scheduler import Scheduler


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(num_blocks: int, ttl: float | None = 10.0, clock: Clock | None = None, max_pinned: int = 4) -> Scheduler:
    sessions = None if ttl is None else SessionPins(ttl, max_pinned, clock or Clock())
    return Scheduler(num_blocks, BS, 8, 64, max_model_len=256, sessions=sessions)


def run(s: Scheduler, tokens: list[int], seq_id: int, session: str | None = None, max_tokens: int = 1):
    """Run one request to completion; its sequence (num_cached_tokens says what its prefix match found)."""
    seq = make_seq(seq_id, tokens, max_tokens)
    seq.session_id = session
    s.add(seq)
    while not seq.is_finished:
        run_step(s)
    return seq


HISTORY = list(range(100, 108))  # two blocks


def pressure(s: Scheduler) -> None:
    """Requests that need every unpinned block, one after another (the LRU would evict the history)."""
    for i in range(3):
        run(s, [200 + 10 * i + j for j in range(11)], seq_id=10 + i)


def test_pin_survives_pressure_within_ttl() -> None:
    control = make(5, ttl=None)
    run(control, HISTORY, 0, session="s")
    pressure(control)
    assert run(control, [*HISTORY, 7, 1, 2, 3], 1).num_cached_tokens == 0  # without the pin: evicted

    s = make(5)
    run(s, HISTORY, 0, session="s")
    assert s.kv.sessions.num_blocks == 2
    pressure(s)
    assert run(s, [*HISTORY, 7, 1, 2, 3], 1, session="s").num_cached_tokens == 8


def test_pin_expires_after_ttl() -> None:
    clock = Clock()
    s = make(5, clock=clock)
    run(s, HISTORY, 0, session="s")
    clock.now = 10.5  # past the TTL: released at the next step
    pressure(s)
    assert s.kv.sessions.num_blocks == 0
    assert run(s, [*HISTORY, 7, 1, 2, 3], 1).num_cached_tokens == 0
    assert s.kv.num_used == 0


def test_pins_yield_to_a_request_that_could_not_otherwise_start() -> None:
    """A waiting request needing the pinned blocks, with nothing running: the pin goes, the request runs."""
    s = make(5)
    run(s, HISTORY, 0, session="s")
    big = run(s, list(range(300, 319)), 1)  # 19 tokens + 1: all five blocks
    assert big.finish_reason == "length"
    assert s.kv.sessions.num_blocks == 0 and s.kv.num_used == 0


def test_pins_yield_before_a_running_sequence_is_preempted() -> None:
    s = make(4)
    run(s, HISTORY, 0, session="s")
    grower = run(s, list(range(300, 310)), 1, max_tokens=5)  # 10 tokens, grows into a fourth block
    assert grower.num_preemptions == 0
    assert s.kv.num_used == 0


def test_pins_are_capped() -> None:
    """All sessions together hold at most max_blocks: the least recently used session's pin goes first."""
    s = make(16, max_pinned=4)
    run(s, HISTORY, 0, session="a")
    run(s, list(range(400, 408)), 1, session="b")
    run(s, list(range(500, 508)), 2, session="c")
    pins = s.kv.sessions
    assert pins.num_blocks == 4 and "a" not in pins and "b" in pins and "c" in pins


def _tiered(num_blocks: int, tier_slots: int) -> tuple[Scheduler, KVTier, torch.Tensor]:
    cache = torch.randn(2, 2, num_blocks * BS, 1, 4)
    probe = KVTier(cache, BS, 1 << 16, b"m")
    tier = KVTier(cache, BS, 4096 + tier_slots * probe.slot_bytes, b"m")
    s = make(num_blocks, ttl=None)
    s.kv.attach_tier(tier)
    return s, tier, cache


def test_evicted_prefix_is_restored_not_recomputed_and_no_block_leaks() -> None:
    s, tier, _ = _tiered(5, 16)
    run(s, HISTORY, 0)
    pressure(s)
    assert tier.stats.stored_bytes > 0
    again = run(s, [*HISTORY, 7, 1, 2, 3], 1)
    assert again.num_cached_tokens == 8  # two blocks restored
    assert tier.stats.hits == 2
    assert s.stats.prompt_tokens_computed == 8 + 3 * 11 + 4  # the history once, never again
    assert s.kv.num_used == 0 and s.kv.num_free == 5


def test_a_block_failing_verification_is_recomputed() -> None:
    s, tier, _ = _tiered(5, 16)
    run(s, HISTORY, 0)
    pressure(s)
    second = block_hash(block_hash(b"", HISTORY[:4]), HISTORY[4:8])
    slot = tier._index[second]
    tier._slots[slot, 200] ^= 0xFF  # one byte of its payload
    again = run(s, [*HISTORY, 7, 1, 2, 3], 1)
    assert again.num_cached_tokens == 4  # the first block restored, the second computed
    assert tier.stats.hits == 1 and tier.stats.rejected == 1
    assert s.kv.num_used == 0 and s.kv.num_free == 5
