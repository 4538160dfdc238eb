"""Prompt lookup against a plain scan, backoff's pauses, and `--speculative` parsing."""

from __future__ import annotations

import random

import pytest

from vivace.engine.config import EngineConfig, InvalidParameterError
from vivace.engine.speculative.backoff import FIRST_PAUSE, Backoff
from vivace.engine.speculative.config import SpeculativeConfig
from vivace.engine.speculative.ngram import NgramProposer, lookup


def _reference(tokens: list[int], k: int, max_n: int, min_n: int) -> list[int]:
    """The obvious version: longest tail first, latest earlier occurrence followed by a token."""
    for n in range(max_n, min_n - 1, -1):
        if n >= len(tokens):
            continue
        tail = tokens[-n:]
        for start in range(len(tokens) - n - 1, -1, -1):
            if tokens[start : start + n] == tail:
                return tokens[start + n : start + n + k]
    return []


def test_lookup_matches_a_plain_scan_on_random_token_lists():
    rng = random.Random(0)
    for _ in range(3000):
        alphabet = rng.choice([2, 3, 5, 300, 70000])  # large ids: byte patterns that straddle token boundaries
        tokens = [rng.randrange(alphabet) for _ in range(rng.randrange(1, 40))]
        k, min_n = rng.randrange(1, 6), rng.randrange(1, 4)
        max_n = min_n + rng.randrange(0, 3)
        assert lookup(tokens, k, max_n, min_n) == _reference(tokens, k, max_n, min_n), (tokens, k, max_n, min_n)


def test_lookup_prefers_the_longest_tail_and_the_latest_match():
    # Tail [7, 8, 9]: the 3-gram occurs once (followed by 1); the 2-gram [8, 9] later (followed by 2).
    tokens = [7, 8, 9, 1, 1, 8, 9, 2, 2, 7, 8, 9]
    assert lookup(tokens, 2, 3, 2) == [1, 1]
    assert lookup(tokens, 2, 2, 2) == [2, 2]
    assert lookup([5, 6, 5, 6, 5, 6], 3, 2, 2) == [5, 6]  # the latest occurrence, cut by the end
    assert lookup([1, 2, 3], 4, 3, 1) == []


def test_backoff_pauses_after_rejections_and_resumes_on_acceptance():
    backoff = Backoff()
    assert backoff.should_propose(1)
    backoff.observe(1, 4, 0)  # rate 0.5
    assert backoff.should_propose(1)
    backoff.observe(1, 4, 0)  # rate 0.25: pause
    assert [backoff.should_propose(1) for _ in range(FIRST_PAUSE + 1)] == [False] * FIRST_PAUSE + [True]
    backoff.observe(1, 4, 0)  # the probe fails: a pause twice as long
    assert [backoff.should_propose(1) for _ in range(2 * FIRST_PAUSE + 1)] == [False] * 2 * FIRST_PAUSE + [True]
    backoff.observe(1, 4, 4)  # the probe succeeds: proposing every step again
    assert all(backoff.should_propose(1) for _ in range(10))
    assert backoff.should_propose(2)  # per sequence


def test_proposer_respects_max_k_and_its_own_k():
    proposer = NgramProposer(SpeculativeConfig(k=3, max_n=2, min_n=1))
    tokens = [1, 2, 3, 4, 5, 6, 1, 2]
    assert proposer.propose(0, tokens, 10) == [3, 4, 5]
    assert proposer.propose(0, tokens, 2) == [3, 4]
    assert proposer.propose(0, tokens, 0) == []


def test_speculative_option_parses_like_vllm_and_names_the_field():
    assert SpeculativeConfig.parse("ngram") == SpeculativeConfig()
    assert SpeculativeConfig.parse("ngram:k=6,max_n=5,min_n=1") == SpeculativeConfig("ngram", 6, 5, 1)
    assert EngineConfig(speculative="ngram:k=2").speculative_config == SpeculativeConfig(k=2)
    assert EngineConfig().speculative_config is None
    assert SpeculativeConfig.parse("draft:random:tiny@5,k=3") == SpeculativeConfig("draft", 3, model="random:tiny@5")
    assert SpeculativeConfig.parse("draft:/models/a,b.gguf").model == "/models/a,b.gguf"
    assert SpeculativeConfig.parse("medusa:/heads/x,k=2") == SpeculativeConfig("medusa", 2, model="/heads/x")
    for bad in (
        "medusa",
        "ngram:k=0",
        "ngram:k=x",
        "ngram:q=1",
        "ngram:min_n=3,max_n=2",
        "ngram:k",
        "draft",
        "draft:k=2",
        "medusa:k=2",
        "medusa:/heads,k=17",
    ):
        with pytest.raises(InvalidParameterError) as err:
            EngineConfig(speculative=bad)
        assert err.value.param == "speculative"
