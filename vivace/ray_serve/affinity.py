"""Cache affinity, without Ray: which replica has the longest cached prefix of a prompt, which replica a
session is on, and the ranking of replicas the request router hands to Ray Serve.

A replica's cache is modelled by the prompts routed to it (as Ray's PrefixCacheAffinityRouter does):
a prompt's text is cut into CHUNK-character chunks hashed in a chain, as the engine hashes KV blocks,
so a chunk's hash stands for the whole prefix up to it. Each replica keeps the most recent
`max_chunks` hashes (LRU), a stand-in for its KV cache's own LRU.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

ROUTERS = ("affinity", "pow2")  # `--router`: cache affinity, or Ray's power of two choices
CHUNK = 64  # characters: ~16 tokens, one KV block of the default block size


def chunk_hashes(text: str) -> list[int]:
    """The chained hashes of `text`'s whole CHUNK-character chunks (a partial last chunk is not cached)."""
    hashes: list[int] = []
    previous = 0
    for start in range(0, len(text) - CHUNK + 1, CHUNK):
        previous = hash((previous, text[start : start + CHUNK]))
        hashes.append(previous)
    return hashes


class PrefixIndex:
    """Per replica, the chained chunk hashes of the prompts it was sent, most recent last."""

    def __init__(self, max_chunks: int = 65536) -> None:
        self.max_chunks = max_chunks
        self._replicas: dict[Hashable, OrderedDict[int, None]] = {}

    def insert(self, replica: Hashable, hashes: Iterable[int]) -> None:
        """Record that `replica` now caches the prefixes `hashes` stand for."""
        cached = self._replicas.setdefault(replica, OrderedDict())
        for h in hashes:
            cached[h] = None
            cached.move_to_end(h)
        while len(cached) > self.max_chunks:
            cached.popitem(last=False)

    def size(self, replica: Hashable) -> int:
        """How many chunks `replica` caches."""
        return len(self._replicas.get(replica, ()))

    def matched(self, replica: Hashable, hashes: Sequence[int]) -> int:
        """How many leading chunks of a prompt with `hashes` `replica` caches."""
        cached = self._replicas.get(replica)
        if not cached:
            return 0
        n = 0
        for h in hashes:  # a chain: once one chunk is missing, no longer prefix can be cached
            if h not in cached:
                break
            n += 1
        return n

    def replicas(self) -> set[Hashable]:
        """The replicas with cached prefixes."""
        return set(self._replicas)

    def drop(self, replica: Hashable) -> None:
        """Forget a replica (it died: its cache died with it)."""
        self._replicas.pop(replica, None)


class SessionTable:
    """Session id -> the replica its conversation ran on, the most recent `max_sessions` kept."""

    def __init__(self, max_sessions: int = 100_000) -> None:
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Hashable] = OrderedDict()

    def get(self, session: str | None) -> Hashable | None:
        """The replica `session` last ran on, if known."""
        return None if session is None else self._sessions.get(session)

    def put(self, session: str | None, replica: Hashable) -> None:
        """Remember that `session` ran on `replica`."""
        if session is None:
            return
        self._sessions[session] = replica
        self._sessions.move_to_end(session)
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)

    def drop(self, replica: Hashable) -> None:
        """Forget every session on a dead replica."""
        for session in [s for s, r in self._sessions.items() if r == replica]:
            del self._sessions[session]


@dataclass(frozen=True)
class Candidate:
    """One replica as the ranking sees it: its queue length (None = unknown), how many leading chunks of
    the prompt it caches, and how many chunks it caches in all."""

    replica: Hashable
    queue_len: int | None
    matched: int = 0
    cached: int = 0


def rank(candidates: Sequence[Candidate], session_replica: Hashable | None, imbalance: int) -> list[list[Hashable]]:
    """Replicas in order of preference, as Ray Serve's ranks (it takes the first rank with room).

    The session's replica, else the replica with the longest cached prefix, comes first, unless its
    queue is more than `imbalance` requests longer than the shortest: then the least loaded replicas
    come first (Ray picks the shorter queue within a rank) and the cached one after them. A prompt no
    replica caches goes to the least loaded replica caching least (as Ray's router picks its
    "smallest tenant"), so new conversations spread over idle replicas instead of piling on one.
    """
    if not candidates:
        return []
    known = [c.queue_len for c in candidates if c.queue_len is not None]
    shortest = min(known) if known else 0
    preferred = next((c for c in candidates if c.replica == session_replica), None)
    if preferred is None:
        best = max(candidates, key=lambda c: c.matched)
        preferred = best if best.matched > 0 else None
    if preferred is None:
        idle = [c for c in candidates if c.queue_len is None or c.queue_len == shortest] or list(candidates)
        least = min(c.cached for c in idle)
        preferred = random.choice([c for c in idle if c.cached == least])  # ties: spread, as pow2 does
        return [[preferred.replica], [c.replica for c in candidates if c.replica != preferred.replica]]
    others = [c.replica for c in candidates if c.replica != preferred.replica]
    if preferred.queue_len is not None and preferred.queue_len - shortest > imbalance:
        return [others, [preferred.replica]]
    return [[preferred.replica], others]
