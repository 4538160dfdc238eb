"""Streaming detokenization: text deltas per generated token, never splitting a UTF-8 character."""

from __future__ import annotations

from vivace.engine.tokenizer import Tokenizer

_REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """Turns a growing token stream into text deltas; concatenated deltas equal `tokenizer.decode(ids)`.

    Uses the prefix/read-offset window of vLLM and TGI: each step decodes only the tokens since the last
    emitted boundary (plus the one before, for context such as a leading-space strip), not the whole sequence.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = True, deferred: bool = False) -> None:
        """`deferred`: nobody reads text before the end, so `add` only collects ids and `finish`
        decodes them all in one call (offline requests without stop strings)."""
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        self.deferred = deferred
        self._byte_ids = tokenizer.byte_fallback_ids
        self._ids: list[int] = []
        self._prefix_offset = 0  # start of the decode window; text up to read_offset has been emitted
        self._read_offset = 0

    @property
    def token_ids(self) -> list[int]:
        """All token ids added so far."""
        return self._ids

    def add(self, token_id: int) -> str:
        """Append one token and return the text it completes ("" while a character is still partial)."""
        self._ids.append(token_id)
        if self.deferred:
            return ""
        if token_id in self._byte_ids:
            # Byte-fallback decoding replaces a whole run of byte tokens once any byte in it is invalid,
            # so text from a run is only final once the run ends.
            return ""
        prefix_text = self._decode(self._prefix_offset, self._read_offset)
        new_text = self._decode(self._prefix_offset, len(self._ids))
        if len(new_text) <= len(prefix_text) or new_text.endswith(_REPLACEMENT):
            return ""
        self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        return new_text[len(prefix_text) :]

    def finish(self) -> str:
        """Flush text held back at the end of the stream (e.g. a dangling partial byte sequence)."""
        prefix_text = self._decode(self._prefix_offset, self._read_offset)
        new_text = self._decode(self._prefix_offset, len(self._ids))
        self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        return new_text[len(prefix_text) :]

    def _decode(self, start: int, end: int) -> str:
        if start >= end:
            return ""
        return self._tokenizer.decode(self._ids[start:end], skip_special_tokens=self._skip_special_tokens)
