"""The cache-affinity model and ranking (vivace/ray_serve/affinity.py), without Ray."""

from __future__ import annotations

import random

from vivace.ray_serve.affinity import CHUNK, Candidate, PrefixIndex, SessionTable, chunk_hashes, rank


def test_chunk_hashes_chain_the_prefix():
    a = "x" * CHUNK + "y" * CHUNK + "z" * 10
    assert len(chunk_hashes(a)) == 2  # the partial last chunk is not cached
    b = "w" * CHUNK + "y" * CHUNK
    # Same second chunk, different first: a chain, so the second hashes differ too.
    assert chunk_hashes(a)[1] != chunk_hashes(b)[1]
    assert chunk_hashes(a + "q" * CHUNK)[:2] == chunk_hashes(a)


def test_matched_is_the_longest_cached_prefix_against_a_reference():
    rng = random.Random(0)
    index = PrefixIndex()
    texts = ["".join(rng.choice("ab") for _ in range(CHUNK * rng.randint(1, 6))) for _ in range(40)]
    routed = {t: rng.choice(["r1", "r2"]) for t in texts[:20]}
    for text, replica in routed.items():
        index.insert(replica, chunk_hashes(text))
    for query in texts:
        for replica in ("r1", "r2"):
            # Reference: the longest whole-chunk prefix shared with any text sent to the replica.
            expected = 0
            for text, r in routed.items():
                if r != replica:
                    continue
                n = 0
                while (n + 1) * CHUNK <= min(len(text), len(query)) and text[: (n + 1) * CHUNK] == query[
                    : (n + 1) * CHUNK
                ]:
                    n += 1
                expected = max(expected, n)
            assert index.matched(replica, chunk_hashes(query)) == expected


def test_index_evicts_least_recently_used_and_drops_replicas():
    index = PrefixIndex(max_chunks=2)
    old, new = chunk_hashes("o" * CHUNK), chunk_hashes("n" * CHUNK * 2)
    index.insert("r", old)
    index.insert("r", new)
    assert index.matched("r", old) == 0 and index.matched("r", new) == 2
    index.drop("r")
    assert index.matched("r", new) == 0 and index.replicas() == set()


def test_sessions_are_bounded_and_forgotten_with_their_replica():
    table = SessionTable(max_sessions=2)
    table.put("a", "r1")
    table.put("b", "r2")
    table.put("c", "r1")
    assert table.get("a") is None and table.get("b") == "r2"
    table.drop("r1")
    assert table.get("c") is None and table.get("b") == "r2"
    assert table.get(None) is None


def test_rank_prefers_the_session_then_the_longest_prefix():
    candidates = [Candidate("r1", 0, matched=5), Candidate("r2", 1, matched=0), Candidate("r3", 2, matched=1)]
    assert rank(candidates, None, imbalance=4) == [["r1"], ["r2", "r3"]]
    assert rank(candidates, "r3", imbalance=4) == [["r3"], ["r1", "r2"]]  # the session beats a longer prefix
    assert rank(candidates, "gone", imbalance=4) == [["r1"], ["r2", "r3"]]  # an unknown replica is ignored


def test_rank_falls_back_to_the_least_loaded_when_overloaded_or_uncached():
    candidates = [Candidate("r1", 9, matched=5), Candidate("r2", 1), Candidate("r3", None)]
    assert rank(candidates, None, imbalance=4) == [["r2", "r3"], ["r1"]]  # 9 - 1 > 4: the cache waits
    assert rank(candidates, None, imbalance=8) == [["r1"], ["r2", "r3"]]
    assert rank([], None, imbalance=4) == []


def test_a_new_prompt_goes_to_the_least_loaded_replica_caching_least():
    idle = [Candidate("r1", 0, cached=50), Candidate("r2", 0, cached=10), Candidate("r3", 2, cached=0)]
    assert rank(idle, None, imbalance=4) == [["r2"], ["r1", "r3"]]
    # Successive new conversations on idle replicas alternate as each one's cache grows.
    index, chosen = PrefixIndex(), []
    for conversation in range(4):
        hashes = chunk_hashes(f"conversation {conversation} " * 20)
        candidates = [Candidate(r, 0, index.matched(r, hashes), index.size(r)) for r in ("r1", "r2")]
        chosen.append(rank(candidates, None, imbalance=4)[0][0])
        index.insert(chosen[-1], hashes)
    assert sorted(chosen) == ["r1", "r1", "r2", "r2"]
