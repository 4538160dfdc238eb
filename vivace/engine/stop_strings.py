"""Incremental stop-string matching over detokenized text deltas.

Generation stops as soon as any stop string is complete in the text seen so far; when several
complete at the same character, the one starting earliest (the longest) is the match. Because the
rule depends only on the text, not on how it was split into deltas, the emitted text is the same
for every split: everything before the matched stop string, which is itself never emitted.
"""

from __future__ import annotations


class StopStringMatcher:
    """Feed text deltas; get back the text safe to emit now and whether a stop string matched."""

    def __init__(self, stops: list[str]) -> None:
        if any(not s for s in stops):
            raise ValueError("stop strings must be non-empty")
        self.stops = list(dict.fromkeys(stops))
        # Held-back text is always a proper prefix of some stop string, so this bounds its length.
        self._prefixes = {s[:i] for s in self.stops for i in range(1, len(s))}
        self._max_held = max((len(s) - 1 for s in self.stops), default=0)
        self._held = ""
        self.stopped = False
        self.matched: str | None = None  # the stop string that ended generation, if any

    def feed(self, delta: str) -> tuple[str, bool]:
        """Consume `delta`; return (text safe to emit now, stopped). After a stop, returns ("", True)."""
        if not self.stops:
            return delta, False
        if self.stopped:
            return "", True
        text = self._held + delta
        best: tuple[int, int, str] | None = None  # (end, start, stop)
        for s in self.stops:
            start = text.find(s)
            if start >= 0:
                candidate = (start + len(s), start, s)
                if best is None or candidate < best:
                    best = candidate
        if best is not None:
            self._held = ""
            self.stopped, self.matched = True, best[2]
            return text[: best[1]], True
        # Hold back the longest suffix that could still grow into a stop string.
        for n in range(min(self._max_held, len(text)), 0, -1):
            if text[-n:] in self._prefixes:
                self._held = text[-n:]
                return text[:-n], False
        self._held = ""
        return text, False

    def flush(self) -> str:
        """Return held-back text at the end of generation (it stopped for another reason)."""
        held, self._held = self._held, ""
        return held
