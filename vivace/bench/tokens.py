"""The tokenizer that counts tokens where a provider does not: the packaged model's, or a given one."""

from __future__ import annotations

from functools import lru_cache

from vivace.engine.loaders import tokenizer_file
from vivace.engine.tokenizer import Tokenizer


@lru_cache(maxsize=4)
def load_tokenizer(path: str | None = None) -> Tokenizer:
    """The tokenizer of a .gguf file or an HF-layout directory (None: the packaged model), cached."""
    return tokenizer_file.load_tokenizer(path)


def count_tokens(tokenizer: Tokenizer, text: str) -> int:
    """Tokens in `text` with no special tokens added."""
    return len(tokenizer.encode(text, add_special_tokens=False)) if text else 0
