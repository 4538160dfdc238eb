"""StopStringMatcher against the obvious whole-text answer, for every way of splitting the text."""

from __future__ import annotations

import itertools
import random

import pytest

from vivace.engine.stop_strings import StopStringMatcher


def reference(text: str, stops: list[str]) -> tuple[str, bool]:
    """Scan character by character; stop at the first position where a stop string completes."""
    for end in range(1, len(text) + 1):
        done = [s for s in stops if text[:end].endswith(s)]
        if done:
            return text[: end - max(len(s) for s in done)], True
    return text, False


def run(pieces: list[str], stops: list[str]) -> tuple[str, bool]:
    m = StopStringMatcher(stops)
    out = []
    for piece in pieces:
        emitted, stopped = m.feed(piece)
        out.append(emitted)
        if stopped:
            return "".join(out), True
    return "".join(out) + m.flush(), False


def all_splits(text: str):
    for mask in itertools.product([False, True], repeat=max(len(text) - 1, 0)):
        pieces, start = [], 0
        for i, cut in enumerate(mask, start=1):
            if cut:
                pieces.append(text[start:i])
                start = i
        pieces.append(text[start:])
        yield pieces


CASES = [
    ("hello world", ["world"]),
    ("hello world", ["xyz"]),
    ("stop here", ["stop"]),  # at the very start
    ("aaab", ["aab"]),  # prefix repeats inside itself
    ("abcabd", ["abd", "abc"]),
    ("xabcd", ["abcd", "bc"]),  # "bc" completes first even though "abcd" starts earlier
    ("xabc", ["abc", "bc"]),  # both complete together: the longer (earlier-starting) wins
    ("the end.", ["end", "end."]),
    ("a<|im", ["<|im_end|>"]),  # only a prefix at the end: flushed
    ("", ["x"]),
]


@pytest.mark.parametrize("text,stops", CASES)
def test_every_split_matches_reference(text: str, stops: list[str]) -> None:
    expected = reference(text, stops)
    for pieces in all_splits(text):
        assert run(pieces, stops) == expected, pieces


def test_random_texts_and_splits() -> None:
    rng = random.Random(0)
    for _ in range(2000):
        alphabet = "ab c"
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14)))
        stops = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 3))]
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(0, max(len(text) - 1, 0)))) if text else []
        pieces = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)], strict=True)]
        assert run(pieces, stops) == reference(text, stops), (text, stops, pieces)


def test_no_stop_emits_everything_and_holds_only_prefixes() -> None:
    m = StopStringMatcher(["STOP"])
    assert m.feed("abc ST") == ("abc ", False)
    assert m.feed("O") == ("", False)
    assert m.feed("P") == ("", True)
    assert m.matched == "STOP"
    assert m.feed("more") == ("", True)
    assert m.flush() == ""


def test_held_text_released_when_disambiguated() -> None:
    m = StopStringMatcher(["STOP"])
    assert m.feed("ST") == ("", False)
    assert m.feed("OX") == ("STOX", False)
    assert m.flush() == ""


def test_empty_list_is_passthrough() -> None:
    m = StopStringMatcher([])
    assert m.feed("anything STOP") == ("anything STOP", False)
    assert m.flush() == ""


def test_empty_stop_string_rejected() -> None:
    with pytest.raises(ValueError):
        StopStringMatcher(["ok", ""])
