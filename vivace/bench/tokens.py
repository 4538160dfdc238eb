"""The tokenizer that counts tokens where a provider does not: the packaged model's, or a given one."""

from __future__ import annotations

import os
from functools import lru_cache

from vivace.engine.tokenizer import Tokenizer


@lru_cache(maxsize=4)
def load_tokenizer(path: str | None = None) -> Tokenizer:
    """The tokenizer of a .gguf file or an HF-layout directory (None: the packaged model), without weights."""
    if path is None:
        from vivace.engine.loaders.default_model import default_model_path

        path = default_model_path()
    if os.path.isdir(path):
        return Tokenizer.from_hf_dir(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"tokenizer path {path!r} is neither a .gguf file nor an HF-layout directory")
    from vivace.engine.loaders.gguf import open_gguf

    return Tokenizer.from_gguf_metadata(open_gguf(path).metadata)


def count_tokens(tokenizer: Tokenizer, text: str) -> int:
    """Tokens in `text` with no special tokens added."""
    return len(tokenizer.encode(text, add_special_tokens=False)) if text else 0
