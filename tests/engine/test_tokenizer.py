"""Tokenizer built from GGUF metadata, against transformers' tokenizer loaded from the same file."""

from __future__ import annotations

import os
import random
import unicodedata

import gguf
import pytest

from vivace.engine.loaders.errors import UnsupportedModelError
from vivace.engine.loaders.gguf import open_gguf
from vivace.engine.loaders.tokenizer_builders import tokenizer_from_gguf_metadata
from vivace.engine.tokenizer import Tokenizer

TEXTS = [
    "",
    "Hello, world!",
    "  leading and trailing  ",
    "multiple     spaces between words",
    "tabs\tand\nnewlines\n\n\r\nend",
    "emoji 🤖🎉 and a family 👨‍👩‍👧 with ZWJ",
    "中文字符测试，日本語のテキスト、한국어 텍스트",
    "Ünïcödé çàfé naïve — “quotes” …",
    "numbers 1234567 3.14159 -42 1e10 0x1F",
    "def f(x):\n    return x**2  # comment\n\n\nclass A:\n\tpass\n",
    "<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more text",
    "a <|im_start|> in the middle and <jupyter_code> too",
    "I'm sure they're here, we've seen it, you'll see, he'd know",
    "\u00a0non-breaking\u2003em-space\u200bzero-width",
    "a" * 300,
    "\n",
    " ",
]


def _random_texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    pools = [(32, 126), (0x80, 0x7FF), (0x4E00, 0x9FFF), (0x1F300, 0x1F64F), (0x30, 0x39)]
    out = []
    for _ in range(count):
        chars = []
        for _ in range(rng.randint(0, 40)):
            pick = rng.random()
            if pick < 0.15:
                chars.append(rng.choice(["\n", "\t", " ", "  ", "\r\n"]))
            else:
                low, high = rng.choice(pools)
                chars.append(chr(rng.randint(low, high)))
        out.append("".join(chars))
    return out


def _split_at_digits(text: str) -> list[str]:
    """llama.cpp's first pre-tokenizer pass for `smollm` (regex \\p{N}): every digit is its own piece."""
    pieces, current = [], ""
    for char in text:
        if unicodedata.category(char).startswith("N"):
            pieces += [current, char] if current else [char]
            current = ""
        else:
            current += char
    return pieces + ([current] if current else [])


def _reference_encode(reference, text: str) -> list[int]:
    """transformers' encoding with llama.cpp's digit isolation for this vocabulary.

    transformers' GGUF loader gives `smollm` plain GPT-2 splitting, which differs from llama.cpp and
    SmolLM's own tokenizer.json (Digits + ByteLevel) only where whitespace runs precede a digit.
    """
    return [i for piece in _split_at_digits(text) for i in reference.encode(piece, add_special_tokens=False)]


@pytest.mark.parametrize("text", TEXTS + _random_texts(150, seed=0))
def test_encode_matches_transformers(ours: Tokenizer, reference, text: str) -> None:
    assert ours.encode(text) == _reference_encode(reference, text)
    assert ours.encode(text, add_special_tokens=False) == ours.encode(text)  # SmolLM2 adds no BOS


@pytest.mark.parametrize("text", TEXTS)
def test_encode_matches_transformers_directly(ours: Tokenizer, reference, text: str) -> None:
    """On text without whitespace runs before digits, no digit-isolation caveat applies."""
    assert ours.encode(text) == reference.encode(text)


def test_digits_are_isolated_like_llama_cpp(ours: Tokenizer) -> None:
    text = "items:\n\n1. first\n    22 second\t\t3"
    assert ours.encode(text) == [i for piece in _split_at_digits(text) for i in ours.encode(piece)]


@pytest.mark.parametrize("skip", [True, False])
@pytest.mark.parametrize("text", TEXTS + _random_texts(50, seed=1))
def test_decode_matches_transformers(ours: Tokenizer, reference, text: str, skip: bool) -> None:
    ids = ours.encode(text)
    assert ours.decode(ids, skip_special_tokens=skip) == reference.decode(ids, skip_special_tokens=skip)
    if not skip:
        assert ours.decode(ids, skip_special_tokens=False) == text


@pytest.mark.parametrize("skip", [True, False])
def test_decode_random_ids_matches_transformers(ours: Tokenizer, reference, skip: bool) -> None:
    rng = random.Random(2)
    for _ in range(30):
        ids = [rng.randrange(ours.vocab_size) for _ in range(rng.randint(1, 20))] + [rng.randrange(17)]
        assert ours.decode(ids, skip_special_tokens=skip) == reference.decode(ids, skip_special_tokens=skip)


def test_special_tokens(ours: Tokenizer, reference) -> None:
    assert ours.vocab_size == len(reference) == 49152
    assert (ours.bos_token, ours.bos_token_id) == (reference.bos_token, reference.bos_token_id) == ("<|im_start|>", 1)
    assert (ours.eos_token, ours.eos_token_id) == (reference.eos_token, reference.eos_token_id) == ("<|im_end|>", 2)
    assert ours.encode("<|im_start|>user<|im_end|>") == [1, 4093, 2]
    assert set(reference.all_special_ids) <= set(ours.all_special_ids)
    dropped = [i for i in range(40) if reference.decode([i], skip_special_tokens=True) == ""]
    assert [i for i in ours.all_special_ids if i < 40] == dropped


def test_convert_ids_to_tokens(ours: Tokenizer, reference) -> None:
    ids = list(range(0, ours.vocab_size, 331))
    assert ours.convert_ids_to_tokens(ids) == reference.convert_ids_to_tokens(ids)
    assert ours.convert_ids_to_tokens(1) == "<|im_start|>"


def test_chat_template_is_read(ours: Tokenizer) -> None:
    assert ours.chat_template is not None and "<|im_start|>" in ours.chat_template


def test_unknown_tokenizer_model_is_rejected() -> None:
    meta = {"tokenizer.ggml.model": "rwkv", "tokenizer.ggml.tokens": ["a", "b"]}
    with pytest.raises(UnsupportedModelError, match="'rwkv'.*gpt2.*llama"):
        tokenizer_from_gguf_metadata(meta)


# ---------------------------------------------------------------------------------------------
# SentencePiece-style ("llama") vocabularies: a tiny one written here, against transformers.

SPM_PIECES = {
    "▁": -1.0,
    "h": -2.0,
    "e": -2.1,
    "l": -2.2,
    "o": -2.3,
    "w": -2.4,
    "r": -2.5,
    "d": -2.6,
    "a": -2.7,
    "t": -2.8,
    "▁h": -3.0,
    "el": -3.1,
    "ll": -3.2,
    "lo": -3.3,
    "▁w": -3.4,
    "or": -3.5,
    "ld": -3.6,
    "he": -3.7,
    "▁t": -3.8,
    "▁he": -4.0,
    "llo": -4.1,
    "▁wor": -4.2,
    "▁the": -4.3,
    "▁hello": -5.0,
    "▁world": -5.1,
    "at": -5.2,
}


@pytest.fixture(scope="module")
def spm_path(tmp_path_factory) -> str:
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + list(SPM_PIECES)
    types = [2, 3, 3] + [6] * 256 + [1] * len(SPM_PIECES)
    scores = [0.0, 0.0, 0.0] + [0.0] * 256 + list(SPM_PIECES.values())
    path = tmp_path_factory.mktemp("spm") / "spm.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_scores(scores)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


SPM_TEXTS = [
    "hello world",
    "the world",
    " hello",
    "hello  world ",
    "hat",
    "héllo wörld 日本",
    "a\nb\tc",
    "",
    "<s>hello</s>",
]


@pytest.mark.parametrize("text", SPM_TEXTS)
def test_sentencepiece_vocab_matches_transformers(spm_path: str, text: str) -> None:
    from transformers import AutoTokenizer

    ours = tokenizer_from_gguf_metadata(open_gguf(spm_path).metadata)
    reference = AutoTokenizer.from_pretrained(os.path.dirname(spm_path), gguf_file=os.path.basename(spm_path))
    ids = ours.encode(text)
    assert ids == reference.encode(text)
    assert ids[:1] == [1]  # llama vocabularies add BOS unless the file says otherwise
    assert ours.encode(text, add_special_tokens=False) == reference.encode(text, add_special_tokens=False)
    for skip in (True, False):
        assert ours.decode(ids, skip_special_tokens=skip) == reference.decode(ids, skip_special_tokens=skip)
