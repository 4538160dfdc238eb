"""Backoff for speculation: a sequence whose proposals keep being rejected stops proposing for a while.

A rejected proposal costs a forward pass over k extra rows and buys nothing, so open-ended text
(where prompt lookup finds spurious matches) must not pay for it on every step. Each sequence keeps a
moving average of its acceptance rate; below MIN_RATE it pauses, for twice as long each time in a
row, and probes again after the pause.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_RATE = 0.35  # accepted / proposed below which a sequence pauses
DECAY = 0.5  # weight of the history in the moving average
FIRST_PAUSE = 4  # steps without proposals after the first poor stretch
MAX_PAUSE = 64


@dataclass
class _History:
    rate: float = 1.0  # moving average of accepted / proposed
    skip: int = 0  # steps left without proposing
    pause: int = FIRST_PAUSE  # the next pause's length


class Backoff:
    """Per-sequence acceptance history deciding whether it proposes this step."""

    def __init__(self) -> None:
        self._history: dict[int, _History] = {}

    def should_propose(self, seq_id: int) -> bool:
        """Whether `seq_id` proposes this step (counts one paused step when not)."""
        history = self._history.get(seq_id)
        if history is None or history.skip == 0:
            return True
        history.skip -= 1
        return False

    def observe(self, seq_id: int, proposed: int, accepted: int) -> None:
        """Fold one verification into the sequence's acceptance rate; pause it when the rate is poor."""
        if proposed <= 0:
            return
        history = self._history.setdefault(seq_id, _History())
        history.rate = DECAY * history.rate + (1 - DECAY) * accepted / proposed
        if history.rate >= MIN_RATE:
            history.pause = FIRST_PAUSE
            return
        history.skip = history.pause
        history.pause = min(2 * history.pause, MAX_PAUSE)
        history.rate = MIN_RATE  # a probe after the pause gets one chance to lift it back up

    def forget(self, seq_id: int) -> None:
        """Drop a sequence's history."""
        self._history.pop(seq_id, None)
