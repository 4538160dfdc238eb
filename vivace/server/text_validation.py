"""The one rule every string from a client meets before it can reach the tokenizer.

JSON can carry lone UTF-16 surrogates (`"\\ud800"`), which decode to Python strings that cannot
be encoded as UTF-8: the tokenizer fails on them deep inside a request. Any such string, value or
key, anywhere in a body, is refused up front (json_body.py) with a 400 naming its field.
"""

from __future__ import annotations


def is_valid_text(text: str) -> bool:
    """Whether `text` is encodable as UTF-8 (no lone surrogates)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
