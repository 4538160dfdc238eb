"""Session pins: a conversation's published KV blocks held against eviction for a while after each turn.

A request naming a session (the OpenAI `user` field or the `session_id` extension) leaves its
published blocks pinned when it finishes: each keeps one extra reference, so the LRU never evicts it
and the next turn's prefix match finds the history on the device. Pins are bounded, so they can never
keep other requests out for good:
- a pin expires `ttl` seconds after its session's last turn (checked every step);
- all pins together hold at most `max_blocks` blocks (the least recently used session's go first);
- they yield to running requests: the scheduler releases pins, oldest first, before it preempts;
- they yield to a waiting request that cannot start while nothing runs (so nothing else would free blocks).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from vivace.engine.kv_cache import BlockPool


class SessionPins:
    """Pinned blocks per session id, least recently used session first."""

    def __init__(self, ttl: float, max_blocks: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_blocks = max_blocks
        self.clock = clock
        self.pool: BlockPool | None = None
        self._pins: OrderedDict[str, tuple[list[int], float]] = OrderedDict()  # session -> (blocks, expiry)
        self.num_blocks = 0

    def attach(self, pool: BlockPool) -> None:
        """Pin blocks of `pool` (the KV cache manager's)."""
        self.pool = pool

    def __contains__(self, session: str) -> bool:
        return session in self._pins

    def pin(self, session: str, blocks: list[int]) -> None:
        """Hold `blocks` (a prefix of the session's last sequence) for `ttl` seconds, replacing its previous pin."""
        blocks = blocks[: self.max_blocks]
        for block in blocks:  # taken before the old pin is dropped, so shared blocks never hit zero
            self.pool.acquire(block)
        self._unpin(session)
        self._pins[session] = (blocks, self.clock() + self.ttl)
        self.num_blocks += len(blocks)
        while self.num_blocks > self.max_blocks:
            self.release_oldest()

    def expire(self) -> None:
        """Release every pin whose TTL has passed (pins are kept in expiry order: the TTL is one for all)."""
        now = self.clock()
        while self._pins:
            session, (_, expiry) = next(iter(self._pins.items()))
            if expiry > now:
                return
            self._unpin(session)

    def release_oldest(self) -> bool:
        """Release the least recently used session's pin; False when none is held."""
        if not self._pins:
            return False
        self._unpin(next(iter(self._pins)))
        return True

    def _unpin(self, session: str) -> None:
        entry = self._pins.pop(session, None)
        if entry is None:
            return
        # Tail first, as KVCacheManager.free does: a history's end is the first the LRU evicts.
        for block in reversed(entry[0]):
            self.pool.release(block)
        self.num_blocks -= len(entry[0])
