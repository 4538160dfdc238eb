"""SpeculativeConfig: which proposer guesses tokens and how many, parsed from `--speculative`."""

from __future__ import annotations

from dataclasses import dataclass

from vivace.engine.config import InvalidParameterError

METHODS = ("ngram",)


@dataclass(frozen=True)
class SpeculativeConfig:
    """`ngram:k=4,max_n=4,min_n=2`: up to k tokens proposed per step from an n-gram match, n from max_n down."""

    method: str = "ngram"
    k: int = 4  # vLLM's num_speculative_tokens
    max_n: int = 4  # vLLM's prompt_lookup_max
    min_n: int = 2  # vLLM's prompt_lookup_min

    @classmethod
    def parse(cls, text: str) -> SpeculativeConfig:
        """Parse `METHOD[:key=value,...]`; raises InvalidParameterError naming `speculative`."""
        method, _, options = text.strip().partition(":")
        if method not in METHODS:
            raise InvalidParameterError("speculative", f"unknown method {method!r}; methods: {', '.join(METHODS)}")
        values: dict[str, int] = {}
        for option in filter(None, (o.strip() for o in options.split(","))):
            key, eq, value = option.partition("=")
            if not eq or key not in ("k", "max_n", "min_n"):
                raise InvalidParameterError("speculative", f"expected k=, max_n= or min_n= options, got {option!r}")
            try:
                values[key] = int(value)
            except ValueError:
                raise InvalidParameterError("speculative", f"{key} must be an integer, got {value!r}") from None
        config = cls(method, **values)
        if not 1 <= config.k <= 16:
            raise InvalidParameterError("speculative", f"k must be in [1, 16], got {config.k}")
        if not 1 <= config.min_n <= config.max_n:
            raise InvalidParameterError(
                "speculative", f"need 1 <= min_n <= max_n, got min_n={config.min_n}, max_n={config.max_n}"
            )
        return config
