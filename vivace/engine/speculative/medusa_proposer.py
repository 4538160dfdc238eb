"""Medusa proposer: hands the scheduler the guesses the runner's Medusa heads made at a sequence's last step.

The heads run in the runner, on the hidden state of the row that produced a sequence's latest token
(runner.py), and their guesses come back here through the engine (`offer`). A guess is for the
sequence as it was then: it is proposed only if the sequence still has that many tokens. A sequence
whose guesses keep being rejected pauses like prompt lookup's (backoff.py).
"""

from __future__ import annotations

from vivace.engine.speculative.backoff import Backoff
from vivace.engine.speculative.medusa_heads import MedusaHeads


class MedusaProposer:
    """Proposes the first k Medusa heads' guesses for a sequence's next tokens."""

    def __init__(self, heads: MedusaHeads, k: int) -> None:
        self.heads = heads
        self.k = min(k, heads.num_heads)
        self.backoff = Backoff()
        self._offers: dict[int, tuple[int, list[int]]] = {}

    def offer(self, seq_id: int, num_tokens: int, guesses: list[int]) -> None:
        """The heads' guesses for the tokens after a sequence's first `num_tokens` tokens."""
        self._offers[seq_id] = (num_tokens, guesses)

    def propose(self, seq_id: int, tokens: list[int], max_k: int) -> list[int]:
        """Up to min(k, max_k) guessed next tokens, if the heads guessed for exactly these tokens."""
        offer = self._offers.pop(seq_id, None)
        if offer is None or offer[0] != len(tokens) or max_k <= 0 or not self.backoff.should_propose(seq_id):
            return []
        return offer[1][: min(self.k, max_k)]

    def observe(self, seq_id: int, proposed: int, accepted: int) -> None:
        """Record how many of a sequence's guesses were accepted."""
        self.backoff.observe(seq_id, proposed, accepted)

    def forget(self, seq_id: int) -> None:
        """Drop a finished sequence's state."""
        self.backoff.forget(seq_id)
        self._offers.pop(seq_id, None)
