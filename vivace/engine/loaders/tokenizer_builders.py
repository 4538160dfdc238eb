"""Building a Tokenizer: a `tokenizers` backend from GGUF `tokenizer.*` metadata or an HF directory's tokenizer.json."""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import numpy as np
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors
from tokenizers import Tokenizer as BackendTokenizer

from vivace.engine.loaders.errors import CorruptModelError, UnsupportedModelError
from vivace.engine.loaders.fallback_chat_templates import fallback_chat_template
from vivace.engine.loaders.json_file import read_json_object
from vivace.engine.tokenizer import Tokenizer

# llama.cpp token types (tokenizer.ggml.token_type).
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# `tokenizer.ggml.pre` -> the split regex the vocabulary was trained with (as llama.cpp's llama-vocab.cpp).
_SPLIT_REGEX = {
    "llama-bpe": _LLAMA3_SPLIT,
    "llama3": _LLAMA3_SPLIT,
    "llama-v3": _LLAMA3_SPLIT,
    "smaug-bpe": _LLAMA3_SPLIT,
    "dbrx": _LLAMA3_SPLIT,
    "qwen2": _QWEN2_SPLIT,
    "deepseek-r1-qwen": _QWEN2_SPLIT,
}
# Pre-tokenizers that isolate every digit before GPT-2's regex (llama.cpp's "\p{N}" first pass).
_DIGIT_SPLIT_PRE = {"smollm", "starcoder", "refact", "codeshell"}


@lru_cache(maxsize=1)
def _byte_alphabet() -> dict[int, str]:
    """GPT-2's printable spelling of each byte (bytes_to_unicode)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _byte_level_pre_tokenizer(pre: str | None) -> pre_tokenizers.PreTokenizer:
    """Pre-tokenizer for a byte-level BPE vocabulary; unknown `pre` values fall back to GPT-2's regex."""
    if pre in _SPLIT_REGEX:
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(_SPLIT_REGEX[pre]), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    if pre in _DIGIT_SPLIT_PRE:
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def _merges_from_scores(tokens: list[str], scores: list[float], vocab: dict[str, int]) -> list[tuple[str, str]]:
    """Recover SentencePiece-BPE merges from token scores: every split of a token into two known pieces.

    Ranked best score first, then longer left and right pieces, then token order, as transformers'
    `generate_merges` does. A 262k vocabulary has ~2M candidate splits: they are found in one pass and
    ranked by numpy rather than by sorting Python tuples.
    """
    positions: list[int] = []
    cuts: list[int] = []
    for position, (token, _) in enumerate(zip(tokens, scores, strict=False)):
        for cut in range(1, len(token)):
            if token[:cut] in vocab and token[cut:] in vocab:
                positions.append(position)
                cuts.append(cut)
    pos = np.asarray(positions, dtype=np.int64)
    cut = np.asarray(cuts, dtype=np.int64)
    lengths = np.asarray([len(t) for t in tokens], dtype=np.int64)[pos]
    score = np.asarray(scores, dtype=np.float64)[pos]
    order = np.lexsort((pos, cut - lengths, -cut, -score))  # the last key sorts first
    return [(tokens[p][:c], tokens[p][c:]) for p, c in zip(pos[order].tolist(), cut[order].tolist(), strict=True)]


def _gguf_backend(meta: Mapping[str, Any]) -> tuple[BackendTokenizer, bool, bool]:
    """The backend tokenizer a GGUF's metadata describes, whether it is byte-level, and its BOS default."""
    kind = meta.get("tokenizer.ggml.model")
    tokens: list[str] = list(meta.get("tokenizer.ggml.tokens") or [])
    if not tokens:
        raise CorruptModelError("GGUF metadata has no tokenizer.ggml.tokens; cannot build a tokenizer")
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges") or []]
    if kind == "gpt2":
        alphabet = set(_byte_alphabet().values())
        spell = _byte_alphabet()
        vocab = {
            t if set(t) <= alphabet else "".join(spell[b] for b in t.encode("utf-8")): i for i, t in enumerate(tokens)
        }
        backend = BackendTokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
        backend.pre_tokenizer = _byte_level_pre_tokenizer(meta.get("tokenizer.ggml.pre"))
        backend.decoder = decoders.ByteLevel()
        return backend, True, False
    if kind == "llama":
        vocab = {t: i for i, t in enumerate(tokens)}
        if not merges:
            scores = list(meta.get("tokenizer.ggml.scores") or [0.0] * len(tokens))
            merges = _merges_from_scores(tokens, scores, vocab)
        unk_id = meta.get("tokenizer.ggml.unknown_token_id")
        unk = tokens[unk_id] if unk_id is not None and 0 <= unk_id < len(tokens) else None
        backend = BackendTokenizer(
            models.BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True, byte_fallback=True)
        )
        prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
        backend.pre_tokenizer = pre_tokenizers.Metaspace(
            replacement="▁", prepend_scheme="first" if prefix else "never", split=False
        )
        steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
        if prefix:
            steps.append(decoders.Strip(content=" ", left=1, right=0))
        backend.decoder = decoders.Sequence(steps)
        return backend, False, True
    raise UnsupportedModelError(
        f"GGUF tokenizer model {kind!r} is not supported; supported: 'gpt2' (byte-level BPE), 'llama' (SentencePiece BPE)"
    )


def _set_bos_eos_post_processor(
    backend: BackendTokenizer, bos: str | None, eos: str | None, add_bos: bool, add_eos: bool
) -> None:
    """Make `encode(..., add_special_tokens=True)` add BOS/EOS inside the tokenizers call itself."""
    single, special = "$A", []
    if add_bos and bos is not None and backend.token_to_id(bos) is not None:
        single = f"{bos}:0 {single}"
        special.append((bos, backend.token_to_id(bos)))
    if add_eos and eos is not None and backend.token_to_id(eos) is not None:
        single = f"{single} {eos}:0"
        special.append((eos, backend.token_to_id(eos)))
    pair = single + " " + single.replace("$A", "$B").replace(":0", ":1")
    backend.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=special)


def tokenizer_from_gguf_metadata(meta: Mapping[str, Any]) -> Tokenizer:
    """The Tokenizer GGUF `tokenizer.*` metadata describes (values already decoded to Python types)."""
    backend, byte_level, default_bos = _gguf_backend(meta)
    tokens: list[str] = list(meta["tokenizer.ggml.tokens"])
    types: list[int] = list(meta.get("tokenizer.ggml.token_type") or [TOKEN_NORMAL] * len(tokens))
    alphabet = set(_byte_alphabet().values())

    def token_of(key: str) -> str | None:
        index = meta.get(f"tokenizer.ggml.{key}")
        return tokens[index] if index is not None and 0 <= index < len(tokens) else None

    named = {
        "bos_token": token_of("bos_token_id"),
        "eos_token": token_of("eos_token_id"),
        "unk_token": token_of("unknown_token_id"),
        "pad_token": token_of("padding_token_id"),
    }
    # A byte-level "control" token spelled outside the byte alphabet is a converter mislabel (as transformers).
    special = [
        t for t, k in zip(tokens, types, strict=False) if k == TOKEN_CONTROL and (not byte_level or set(t) <= alphabet)
    ]
    special += [t for t in named.values() if t is not None and t not in special]
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    # User-defined tokens (e.g. `<think>`) are matched whole but are ordinary text when decoding.
    user = [t for t, k in zip(tokens, types, strict=False) if k == TOKEN_USER_DEFINED]
    if user:
        backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in user])
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", default_bos))
    add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False))
    _set_bos_eos_post_processor(backend, named["bos_token"], named["eos_token"], add_bos, add_eos)
    template = meta.get("tokenizer.chat_template") or fallback_chat_template(meta.get("general.architecture", ""))
    return Tokenizer(backend, chat_template=template, **named)


def tokenizer_from_hf_dir(directory: str) -> Tokenizer:
    """The Tokenizer of `tokenizer.json` + `tokenizer_config.json` (+ optional `chat_template.jinja`) in `directory`."""
    path = os.path.join(directory, "tokenizer.json")
    if not os.path.isfile(path):
        raise UnsupportedModelError(
            f"{directory} has no tokenizer.json; only fast (tokenizers-library) tokenizers are supported"
        )
    try:
        backend = BackendTokenizer.from_file(path)
    except Exception as exc:  # tokenizers raises a bare Exception for malformed files
        raise CorruptModelError(f"{path} is not a valid tokenizer.json: {exc}") from exc
    config = read_json_object(os.path.join(directory, "tokenizer_config.json")) or {}
    named = {key: _token_content(config.get(key)) for key in ("bos_token", "eos_token", "unk_token", "pad_token")}
    if "add_bos_token" in config or "add_eos_token" in config:
        _set_bos_eos_post_processor(
            backend,
            named["bos_token"],
            named["eos_token"],
            bool(config.get("add_bos_token")),
            bool(config.get("add_eos_token")),
        )
    return Tokenizer(backend, chat_template=_hf_chat_template(directory, config), **named)


def _hf_chat_template(directory: str, config: Mapping[str, Any]) -> str | None:
    """The default chat template: chat_template.jinja wins over tokenizer_config.json (as transformers)."""
    jinja_path = os.path.join(directory, "chat_template.jinja")
    if os.path.isfile(jinja_path):
        with open(jinja_path, encoding="utf-8") as handle:
            return handle.read()
    template = config.get("chat_template")
    if isinstance(template, list):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        by_name = {entry.get("name"): entry.get("template") for entry in template if isinstance(entry, dict)}
        return by_name.get("default")
    return template if isinstance(template, str) else None


def _token_content(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None
