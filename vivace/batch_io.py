"""JSONL files for `vivace batch`: parse request lines, resume from an existing output, append results.

Kept free of the engine so resume and validation can be tested without a model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from vivace.engine.config import InvalidParameterError, SamplingParams
from vivace.engine.request_params import REQUEST_FIELDS as _PARAMS_FIELDS
from vivace.engine.request_params import sampling_params_from_fields

# Per-line sampling overrides a request may carry (structured outputs included); `n` is left out because an output line holds one text.
SAMPLING_FIELDS: frozenset[str] = _PARAMS_FIELDS - {"n"}
_REQUEST_FIELDS = frozenset({"id", "prompt", "messages"})


class BatchOutputError(ValueError):
    """The output file cannot be resumed from (a corrupt complete line, a line without an index)."""


@dataclass
class BatchRequest:
    """One runnable input line: exactly one of `prompt` (text or token ids) and `messages` is set."""

    index: int
    id: Any
    sampling_params: SamplingParams
    prompt: str | list[int] | None = None
    messages: list[dict[str, Any]] | None = None


@dataclass
class BatchError:
    """An input line that cannot run; it still gets an output line, carrying `error`."""

    index: int
    id: Any
    error: str


def parse_line(index: int, line: str, defaults: dict[str, Any] | None = None) -> BatchRequest | BatchError:
    """Parse one input line; its sampling fields override `defaults` (both as sampling_params_from_fields takes them)."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        return BatchError(index, None, f"invalid JSON: {e}")
    if not isinstance(obj, dict):
        return BatchError(index, None, f"expected a JSON object, got {type(obj).__name__}")
    rid = obj.get("id")
    unknown = sorted(set(obj) - _REQUEST_FIELDS - SAMPLING_FIELDS)
    if unknown:
        return BatchError(
            index,
            rid,
            f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: id, prompt, messages, "
            f"and sampling fields {', '.join(sorted(SAMPLING_FIELDS))}",
        )
    has_prompt, has_messages = "prompt" in obj, "messages" in obj
    if has_prompt == has_messages:
        return BatchError(index, rid, "a line needs exactly one of 'prompt' (string) and 'messages' (chat list)")
    prompt, messages = obj.get("prompt"), obj.get("messages")
    if has_prompt and not _is_prompt(prompt):
        return BatchError(index, rid, "'prompt' must be a non-empty string or a non-empty list of token ids")
    if has_messages and not _is_messages(messages):
        return BatchError(index, rid, "'messages' must be a non-empty list of objects with string 'role' and 'content'")
    fields = {**(defaults or {}), **{k: v for k, v in obj.items() if k in SAMPLING_FIELDS}}
    try:
        params = sampling_params_from_fields(fields)
    except TypeError as e:  # SamplingFieldTypeError: a value of the wrong JSON type
        return BatchError(index, rid, f"invalid sampling field: {e}")
    except InvalidParameterError as e:
        return BatchError(index, rid, str(e))
    return BatchRequest(index, rid, params, prompt=prompt, messages=messages)


def read_requests(path: str | Path, defaults: dict[str, Any] | None = None) -> list[BatchRequest | BatchError]:
    """Parse every non-blank line of `path`; `index` is the 0-based line number in the file."""
    items: list[BatchRequest | BatchError] = []
    with open(path, encoding="utf-8") as f:
        for index, line in enumerate(f):
            if line.strip():
                items.append(parse_line(index, line, defaults))
    return items


def prepare_output(path: str | Path) -> set[int]:
    """Make `path` ready for appending and return the input indices it already holds.

    A trailing line without a newline is what an interrupted write leaves; it is cut off so the
    request is redone. A missing file is treated as empty.
    """
    path = Path(path)
    if not path.exists():
        return set()
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1  # 0 when no complete line
    if end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
    done: set[int] = set()
    for line_no, raw in enumerate(data[:end].splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as e:
            raise BatchOutputError(
                f"{path}:{line_no} is not valid JSON ({e}); fix or delete that line to resume"
            ) from None
        index = record.get("index") if isinstance(record, dict) else None
        if not isinstance(index, int):
            raise BatchOutputError(f"{path}:{line_no} has no integer 'index'; fix or delete that line to resume")
        done.add(index)
    return done


def result_record(
    index: int, id: Any, text: str, finish_reason: str | None, prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    """The output line of a finished request."""
    return {
        "index": index,
        "id": id,
        "text": text,
        "finish_reason": finish_reason,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
    }


def error_record(index: int, id: Any, error: str) -> dict[str, Any]:
    """The output line of a request that could not run."""
    return {"index": index, "id": id, "error": error}


class ResultWriter:
    """Appends one JSON object per line, flushed at once so an interruption loses at most a partial line."""

    def __init__(self, path: str | Path) -> None:
        self._file = open(path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        """Append `record` as one line."""
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _is_prompt(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value)
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value)
    )


def _is_messages(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
        )
    )
