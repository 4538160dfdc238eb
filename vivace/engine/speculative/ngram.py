"""Prompt lookup (n-gram) proposer: the tokens that followed the latest earlier match of the sequence's tail.

No model: the last n tokens (n from max_n down to min_n) are searched in the prompt and output so
far, and up to k tokens that followed their most recent earlier occurrence are proposed. Inputs
that the output copies from (summaries, edits, rewrites) match often; open-ended text rarely, and
a sequence whose proposals keep failing stops proposing for a while (backoff.py).
"""

from __future__ import annotations

from array import array

from vivace.engine.speculative.backoff import Backoff
from vivace.engine.speculative.config import SpeculativeConfig

_WIDTH = 4  # bytes per token id in the search buffer (ids are below 2**31)


def lookup(tokens: list[int], k: int, max_n: int, min_n: int) -> list[int]:
    """Up to k tokens that followed the latest earlier occurrence of the longest matching tail (n in [min_n, max_n])."""
    if k <= 0 or len(tokens) <= min_n:
        return []
    # bytes.rfind searches in C; a hit must also sit on a token boundary.
    haystack = array("i", tokens[:-1]).tobytes()  # a match must be followed by at least one token
    for n in range(min(max_n, len(tokens) - 1), min_n - 1, -1):
        needle = array("i", tokens[-n:]).tobytes()
        end = len(haystack)
        while (at := haystack.rfind(needle, 0, end)) >= 0:
            if at % _WIDTH == 0:
                start = at // _WIDTH + n
                return tokens[start : start + k]
            end = at + len(needle) - 1
    return []


class NgramProposer:
    """Proposes a sequence's next tokens by prompt lookup, backing off where proposals are rejected."""

    def __init__(self, config: SpeculativeConfig) -> None:
        self.config = config
        self.backoff = Backoff()

    def propose(self, seq_id: int, tokens: list[int], max_k: int) -> list[int]:
        """Up to min(k, max_k) guessed next tokens for a sequence whose tokens so far are `tokens`."""
        if max_k <= 0 or not self.backoff.should_propose(seq_id):
            return []
        c = self.config
        return lookup(tokens, min(c.k, max_k), c.max_n, c.min_n)

    def observe(self, seq_id: int, proposed: int, accepted: int) -> None:
        """Record how many of a sequence's proposed tokens were accepted."""
        self.backoff.observe(seq_id, proposed, accepted)

    def forget(self, seq_id: int) -> None:
        """Drop a finished sequence's state."""
        self.backoff.forget(seq_id)
