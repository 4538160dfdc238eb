"""IncrementalDetokenizer: deltas add up to the full decode and never split a UTF-8 character."""

from __future__ import annotations

import random

import pytest

from vivace.engine.detokenizer import IncrementalDetokenizer
from vivace.engine.loaders.default_model import default_model_path
from vivace.engine.loaders.gguf import open_gguf
from vivace.engine.loaders.tokenizer_builders import tokenizer_from_gguf_metadata
from vivace.engine.tokenizer import Tokenizer

REAL_TEXTS = [
    "Hello, world! This is a plain ASCII sentence.",
    "emoji 🤖🎉 family 👨‍👩‍👧 flags 🇫🇷🇯🇵 and skin tones 👋🏽",
    "中文字符测试，日本語のテキスト、한국어 텍스트。",
    "Ünïcödé çàfé naïve — “quotes” … ∑∫√∞ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "def f(x):\n    return x ** 2  # ok\n\n\tdone",
    "<|im_start|>assistant\nSure! 🙂<|im_end|>\n",
]

REPLACEMENT = "\ufffd"


def _stream(tokenizer: Tokenizer, ids: list[int], skip: bool) -> list[str]:
    detok = IncrementalDetokenizer(tokenizer, skip_special_tokens=skip)
    deltas = [detok.add(i) for i in ids]
    return deltas + [detok.finish()]


@pytest.fixture(scope="module")
def smollm() -> Tokenizer:
    return tokenizer_from_gguf_metadata(open_gguf(default_model_path()).metadata)


@pytest.fixture(scope="module")
def spm() -> Tokenizer:
    """A tiny SentencePiece-style vocabulary (byte fallback, leading-space strip decoder)."""
    pieces = ["▁", "▁a", "▁b", "a", "b", "c", "ab", "▁ab", "é"]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + pieces
    meta = {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": [2, 3, 3] + [6] * 256 + [1] * len(pieces),
        "tokenizer.ggml.scores": [0.0] * 259 + [-float(i) for i in range(len(pieces))],
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
    }
    return tokenizer_from_gguf_metadata(meta)


def test_multibyte_characters_do_span_tokens(smollm: Tokenizer) -> None:
    """Guard for the tests below: some emoji tokens decode to U+FFFD on their own."""
    ids = smollm.encode("🤖")
    assert len(ids) > 1 and REPLACEMENT in smollm.decode(ids[:1])


@pytest.mark.parametrize("skip", [True, False])
@pytest.mark.parametrize("text", REAL_TEXTS)
def test_real_texts(smollm: Tokenizer, text: str, skip: bool) -> None:
    ids = smollm.encode(text)
    deltas = _stream(smollm, ids, skip)
    assert "".join(deltas) == smollm.decode(ids, skip_special_tokens=skip)
    assert not any(REPLACEMENT in d for d in deltas)
    if not skip:
        assert "".join(deltas) == text


@pytest.mark.parametrize("skip", [True, False])
@pytest.mark.parametrize("seed", range(40))
def test_random_token_sequences(smollm: Tokenizer, seed: int, skip: bool) -> None:
    rng = random.Random(seed)
    ids = [rng.randrange(smollm.vocab_size) if rng.random() < 0.7 else rng.randrange(300) for _ in range(60)]
    deltas = _stream(smollm, ids, skip)
    full = smollm.decode(ids, skip_special_tokens=skip)
    assert "".join(deltas) == full
    if REPLACEMENT not in full:
        assert not any(REPLACEMENT in d for d in deltas)


@pytest.mark.parametrize("seed", range(20))
def test_byte_tokens_in_random_order(smollm: Tokenizer, seed: int) -> None:
    """Single-byte tokens (ids < 256 in byte-level BPE spell lone bytes) stress partial and invalid UTF-8."""
    rng = random.Random(seed)
    text = "".join(rng.choice("aé中🤖 \n") for _ in range(30))
    ids = smollm.encode(text)
    ids = ids + [rng.randrange(17, 256) for _ in range(10)] + smollm.encode("🙂 end")
    deltas = _stream(smollm, ids, True)
    assert "".join(deltas) == smollm.decode(ids)


@pytest.mark.parametrize("skip", [True, False])
@pytest.mark.parametrize("text", ["a b ab", " ab  é c", "é", "ab\n日本 é", "  leading"])
def test_sentencepiece_leading_space_and_byte_fallback(spm: Tokenizer, text: str, skip: bool) -> None:
    ids = spm.encode(text) + [2] + spm.encode(text, add_special_tokens=False)
    deltas = _stream(spm, ids, skip)
    assert "".join(deltas) == spm.decode(ids, skip_special_tokens=skip)
    assert not any(REPLACEMENT in d for d in deltas)


def test_random_sentencepiece_sequences(spm: Tokenizer) -> None:
    """Includes runs of byte tokens mixing valid and invalid UTF-8, which decode to U+FFFD as a whole run."""
    assert len(spm.byte_fallback_ids) == 256
    rng = random.Random(7)
    for _ in range(50):
        ids = [rng.randrange(spm.vocab_size) for _ in range(rng.randint(1, 30))]
        for skip in (True, False):
            assert "".join(_stream(spm, ids, skip)) == spm.decode(ids, skip_special_tokens=skip)


def test_decode_window_stays_small(smollm: Tokenizer) -> None:
    """Each step decodes a few tokens, not the whole sequence (prefix/read offsets)."""

    class Spy:
        byte_fallback_ids = smollm.byte_fallback_ids

        def __init__(self) -> None:
            self.longest = 0

        def decode(self, ids, skip_special_tokens=True):
            self.longest = max(self.longest, len(ids))
            return smollm.decode(ids, skip_special_tokens=skip_special_tokens)

    spy = Spy()
    ids = smollm.encode(" ".join(REAL_TEXTS) * 20)
    assert len(ids) > 1000
    detok = IncrementalDetokenizer(spy, skip_special_tokens=True)  # type: ignore[arg-type]
    text = "".join(detok.add(i) for i in ids) + detok.finish()
    assert text == smollm.decode(ids)
    assert spy.longest <= 16


def test_finish_flushes_a_dangling_partial_character(smollm: Tokenizer) -> None:
    ids = smollm.encode("ok 🤖")
    detok = IncrementalDetokenizer(smollm)
    streamed = "".join(detok.add(i) for i in ids[:-1])
    tail = detok.finish()
    assert streamed == "ok"
    assert tail == smollm.decode(ids[:-1])[len("ok") :] and REPLACEMENT in tail


@pytest.mark.parametrize("skip", [True, False])
@pytest.mark.parametrize("seed", range(10))
def test_deferred_decodes_once_at_the_end_to_the_streamed_text(smollm: Tokenizer, seed: int, skip: bool) -> None:
    rng = random.Random(1000 + seed)
    text = rng.choice(REAL_TEXTS)
    ids = smollm.encode(text, add_special_tokens=False) + [rng.randrange(smollm.vocab_size) for _ in range(8)]
    deferred = IncrementalDetokenizer(smollm, skip_special_tokens=skip, deferred=True)
    assert [deferred.add(i) for i in ids] == [""] * len(ids)
    assert deferred.finish() == "".join(_stream(smollm, ids, skip)) == smollm.decode(ids, skip_special_tokens=skip)
