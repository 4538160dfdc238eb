"""SpeculativeConfig: which proposer guesses tokens and how many, parsed from `--speculative`.

`ngram[:k=4,max_n=4,min_n=2]` is prompt lookup; `draft:MODEL[,k=4]` is a smaller model sharing
the target's tokenizer (MODEL as `--model` takes it; it may itself contain colons); `medusa:PATH[,k=N]`
is Medusa heads trained for the target by `vivace train-medusa` (k: how many of them propose; tree:
the draft tree's nodes, 0 or 1 for a chain of each head's best guess).
"""

from __future__ import annotations

from dataclasses import dataclass

from vivace.engine.config import InvalidParameterError
from vivace.engine.speculative.tree import MAX_NODES

METHODS = ("ngram", "draft", "medusa")
DEFAULT_TREE = 0  # a chain: bitwise the plain path's greedy tokens on every kernel set (see tree.py)
_OPTIONS = {"ngram": ("k", "max_n", "min_n"), "draft": ("k",), "medusa": ("k", "tree")}
_LOADS = {
    "draft": "a model: draft:MODEL or draft:MODEL,k=4",
    "medusa": "a heads directory: medusa:PATH or medusa:PATH,k=3,tree=8",
}


@dataclass(frozen=True)
class SpeculativeConfig:
    """Up to k tokens proposed per step: from an n-gram match (n from max_n down), by a draft model or by Medusa heads."""

    method: str = "ngram"
    k: int = 4  # vLLM's num_speculative_tokens
    max_n: int = 4  # vLLM's prompt_lookup_max
    min_n: int = 2  # vLLM's prompt_lookup_min
    model: str | None = None  # what the method loads: the draft model, or the Medusa heads' directory
    tree: int = DEFAULT_TREE  # Medusa: nodes of the draft tree verified per step (<= 1: a chain of k)

    @classmethod
    def parse(cls, text: str) -> SpeculativeConfig:
        """Parse `METHOD[:key=value,...]`; raises InvalidParameterError naming `speculative`."""
        method, _, options = text.strip().partition(":")
        if method not in METHODS:
            raise InvalidParameterError("speculative", f"unknown method {method!r}; methods: {', '.join(METHODS)}")
        allowed = _OPTIONS[method]
        values: dict[str, int] = {}
        model_parts: list[str] = []
        for option in filter(None, (o.strip() for o in options.split(","))):
            key, eq, value = option.partition("=")
            if method in _LOADS and not (eq and key in allowed):
                model_parts.append(option)  # part of the draft model's name or the heads' path
                continue
            if not eq or key not in allowed:
                raise InvalidParameterError(
                    "speculative", f"expected {', '.join(k + '=' for k in allowed)} options, got {option!r}"
                )
            try:
                values[key] = int(value)
            except ValueError:
                raise InvalidParameterError("speculative", f"{key} must be an integer, got {value!r}") from None
        model = ",".join(model_parts) or None
        if method in _LOADS and model is None:
            raise InvalidParameterError("speculative", f"{method} needs {_LOADS[method]}")
        config = cls(method, **values, model=model)
        if not 1 <= config.k <= 16:
            raise InvalidParameterError("speculative", f"k must be in [1, 16], got {config.k}")
        if not 0 <= config.tree <= MAX_NODES:
            raise InvalidParameterError("speculative", f"tree must be in [0, {MAX_NODES}], got {config.tree}")
        if not 1 <= config.min_n <= config.max_n:
            raise InvalidParameterError(
                "speculative", f"need 1 <= min_n <= max_n, got min_n={config.min_n}, max_n={config.max_n}"
            )
        return config
