"""Medusa proposer: hands the scheduler the guesses the runner's Medusa heads made at a sequence's last step.

The heads run in the runner, on the hidden state of the row that produced a sequence's latest token
(runner.py), and their guesses come back here through the engine (`offer`). A guess is for the
sequence as it was then: it is proposed only if the sequence still has that many tokens. A sequence
whose guesses keep being rejected pauses like prompt lookup's (backoff.py).

With `tree` > 1 (`--speculative medusa:PATH,tree=N`) the proposal is a draft tree (tree.py) of that many nodes, as Medusa verifies: the
paths most likely to be accepted, chosen once from the heads' held-out accuracy per rank (a path
taking head h's rank-r guess at depth h has the product of those accuracies as its estimate), best
first, so every chosen node's parent is chosen too. With `tree` <= 1, or where the attention backend
has no tree mask, the proposal is the chain of each head's best guess.
"""

from __future__ import annotations

import heapq

from vivace.engine.speculative.backoff import Backoff
from vivace.engine.speculative.medusa_heads import MedusaHeads
from vivace.engine.speculative.tree import MAX_NODES, DraftTree


def tree_choices(rank_accuracy: list[list[float]], num_heads: int, size: int) -> list[tuple[int, ...]]:
    """The `size` rank paths (one rank per head, root-down) with the highest estimated acceptance, parents first."""
    ranks = rank_accuracy[:num_heads]
    frontier = [(-ranks[0][r], (r,)) for r in range(len(ranks[0]))]
    heapq.heapify(frontier)
    chosen: list[tuple[int, ...]] = []
    while frontier and len(chosen) < size:
        neg, path = heapq.heappop(frontier)
        chosen.append(path)
        depth = len(path)
        if depth < len(ranks):
            for r, accuracy in enumerate(ranks[depth]):
                heapq.heappush(frontier, (neg * accuracy, (*path, r)))
    return chosen


class MedusaProposer:
    """Proposes the first k Medusa heads' guesses for a sequence's next tokens, as a chain or a tree."""

    def __init__(self, heads: MedusaHeads, k: int, tree: int = 0) -> None:
        self.heads = heads
        self.k = min(k, heads.num_heads)
        self.backoff = Backoff()
        self._offers: dict[int, tuple[int, list[list[int]]]] = {}
        self.choices = tree_choices(heads.rank_accuracy(), self.k, min(tree, MAX_NODES)) if tree > 1 else []
        self.parents = [self.choices.index(path[:-1]) if len(path) > 1 else -1 for path in self.choices]
        # How many of each head's ranked guesses the runner must return.
        self.ranks = 1 + max((r for path in self.choices for r in path), default=0)

    def offer(self, seq_id: int, num_tokens: int, guesses: list[list[int]]) -> None:
        """The heads' ranked guesses ([head][rank]) for the tokens after a sequence's first `num_tokens` tokens."""
        self._offers[seq_id] = (num_tokens, guesses)

    def propose(self, seq_id: int, tokens: list[int], max_k: int) -> list[int] | DraftTree:
        """Up to min(k, max_k) guessed next tokens, or the tree of guesses, if the heads guessed for exactly these tokens."""
        offer = self._offers.pop(seq_id, None)
        if offer is None or offer[0] != len(tokens) or max_k <= 0 or not self.backoff.should_propose(seq_id):
            return []
        guesses = offer[1]
        if not self.choices:
            return [head[0] for head in guesses[: min(self.k, max_k)]]
        tokens_of = [guesses[len(path) - 1][path[-1]] for path in self.choices]
        return DraftTree(tokens_of, self.parents)  # the scheduler cuts it to max_k nodes

    def observe(self, seq_id: int, proposed: int, accepted: int) -> None:
        """Record how many of a sequence's guesses were accepted (`proposed`: the longest path)."""
        self.backoff.observe(seq_id, proposed, accepted)

    def forget(self, seq_id: int) -> None:
        """Drop a finished sequence's state."""
        self.backoff.forget(seq_id)
        self._offers.pop(seq_id, None)
