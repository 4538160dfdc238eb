"""Request fields -> SamplingParams: the one mapping every front door uses.

The OpenAI server (chat and completion bodies), the `local:` provider, `vivace batch` lines and the
CLI's options all hand their fields to `sampling_params_from_fields`, so a field means the same thing
and fails with the same message whichever way a request came in.

What it accepts, beyond SamplingParams' own field names:

- `max_completion_tokens` (OpenAI chat): wins over `max_tokens` when given; its range errors name it.
- `logprobs` as a bool (OpenAI chat) with `top_logprobs`: true = the chosen token's logprob plus
  `top_logprobs` (default 0) alternatives, false = off; `top_logprobs` without `logprobs: true` is an
  error. `logprobs` as an int (OpenAI completions, the engine) is the number of alternatives.
- `stop` as one string or a list of strings.
- `logit_bias` keys as token ids or strings of them (JSON object keys are strings).
- Structured outputs: `response_format`, vLLM's `guided_json` / `guided_regex` / `guided_grammar` /
  `guided_choice` and `structured_outputs` (see structured/request_fields.py).
- A None value means "not given" (SamplingParams' default), except for `max_tokens`, where None means
  no limit (up to the context length) as it does in SamplingParams.

Every error is an InvalidParameterError naming the field as the client spelled it; one about a
value's type (a string where a number goes) is a SamplingFieldTypeError, which is also a TypeError.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields as dataclass_fields
from typing import Any

from vivace.engine.config import InvalidParameterError, SamplingParams
from vivace.engine.structured.request_fields import STRUCTURED_FIELDS, structured_from_fields

SAMPLING_FIELDS: frozenset[str] = frozenset(f.name for f in dataclass_fields(SamplingParams))
# OpenAI's names that are not SamplingParams fields.
OPENAI_FIELDS: frozenset[str] = frozenset({"max_completion_tokens", "top_logprobs"})
REQUEST_FIELDS: frozenset[str] = SAMPLING_FIELDS | OPENAI_FIELDS | STRUCTURED_FIELDS

_INT_FIELDS = (
    "n",
    "top_k",
    "max_tokens",
    "min_tokens",
    "seed",
    "max_completion_tokens",
    "top_logprobs",
    "prompt_logprobs",
)
_FLOAT_FIELDS = ("temperature", "top_p", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty")
_BOOL_FIELDS = ("ignore_eos", "skip_special_tokens")


class SamplingFieldTypeError(InvalidParameterError, TypeError):
    """A request field holds a value of the wrong type; `param` names the field."""


def sampling_params_from_fields(fields: Mapping[str, Any]) -> SamplingParams:
    """The engine's SamplingParams for a request's fields (see the module docstring for the names)."""
    unknown = sorted(set(fields) - REQUEST_FIELDS)
    if unknown:
        raise InvalidParameterError(unknown[0], f"unknown sampling field; known: {', '.join(sorted(REQUEST_FIELDS))}")
    given = {name: value for name, value in fields.items() if value is not None}
    for name in _INT_FIELDS:
        if name in given:
            given[name] = _integer(name, given[name])
    for name in _FLOAT_FIELDS:
        if name in given:
            given[name] = _number(name, given[name])
    for name in _BOOL_FIELDS:
        if name in given and not isinstance(given[name], bool):
            raise SamplingFieldTypeError(name, f"must be true or false, got {given[name]!r}")

    kwargs = {name: value for name, value in given.items() if name in SAMPLING_FIELDS}
    kwargs["structured_outputs"] = structured_from_fields(given)
    renamed: dict[str, str] = {}  # SamplingParams field -> the request field its value came from
    if "max_completion_tokens" in given:
        kwargs["max_tokens"] = given["max_completion_tokens"]
        renamed["max_tokens"] = "max_completion_tokens"
    elif "max_tokens" in fields:  # None included: no limit
        kwargs["max_tokens"] = given.get("max_tokens")
    logprobs, top_logprobs = given.get("logprobs"), given.get("top_logprobs")
    if top_logprobs is not None and logprobs is not True:
        raise InvalidParameterError("top_logprobs", "requires logprobs to be true")
    if isinstance(logprobs, bool):
        kwargs["logprobs"] = (top_logprobs or 0) if logprobs else None
        if top_logprobs is not None:
            renamed["logprobs"] = "top_logprobs"
    elif logprobs is not None:
        kwargs["logprobs"] = _integer("logprobs", logprobs)
    if "stop" in given:
        kwargs["stop"] = _strings("stop", given["stop"])
    if "stop_token_ids" in given:
        kwargs["stop_token_ids"] = _token_ids("stop_token_ids", given["stop_token_ids"])
    if "logit_bias" in given:
        kwargs["logit_bias"] = _logit_bias(given["logit_bias"]) or None
    try:
        return SamplingParams(**kwargs)
    except InvalidParameterError as e:
        if e.param in renamed:
            raise InvalidParameterError(renamed[e.param], str(e)[len(e.param) + 2 :]) from None
        raise


def _integer(name: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise SamplingFieldTypeError(name, f"must be an integer, got {value!r}")


def _number(name: str, value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise SamplingFieldTypeError(name, f"must be a number, got {value!r}")


def _strings(name: str, value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(s, str) for s in value):
        return list(value)
    raise SamplingFieldTypeError(name, f"must be a string or a list of strings, got {value!r}")


def _token_ids(name: str, value: Any) -> list[int]:
    if isinstance(value, (list, tuple)) and all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        return list(value)
    raise SamplingFieldTypeError(name, f"must be a list of token ids, got {value!r}")


def _logit_bias(bias: Any) -> dict[int, float]:
    """Token id -> bias; keys may be ints or strings of them. Value ranges are SamplingParams' to check."""
    if not isinstance(bias, Mapping):
        raise SamplingFieldTypeError("logit_bias", f"must be an object of token id -> bias, got {bias!r}")
    out: dict[int, float] = {}
    for key, value in bias.items():
        if isinstance(key, int) and not isinstance(key, bool):
            token = key
        else:
            try:
                token = int(key) if isinstance(key, str) else None
            except ValueError:
                token = None
            if token is None:
                raise InvalidParameterError("logit_bias", f"keys must be token ids, got {key!r}")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise SamplingFieldTypeError("logit_bias", f"values must be numbers, got {value!r}")
        out[token] = float(value)
    return out
