"""The JSON report: a versioned schema holding every request's timeline and every level's summary.

Schema `vivace-bench` version 1:
{"schema": "vivace-bench", "version": 1, "created", "target", "workload", "settings", "judge",
 "environment": {"hardware", "software": {"python", "platform", "packages"}, "engine"} (optional),
 "levels": [{"mode", "value", "label", "duration", "summary": {...}, "scores": {...},
             "requests": [{"index", "send", "end", "error", "status", "prompt_tokens",
                           "output_tokens", "finish_reason", "chunks": [{"t", "text", "tokens"}]}]}]}
Times are seconds: `send` from the level's start, chunk `t` and `end` from the request's send.
No API key is ever written: only the provider id, whose URL is stripped of any user:password part.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from vivace.bench.metrics import Summary
from vivace.bench.records import Chunk, LevelResult, RequestRecord
from vivace.bench.result import BenchResult, LevelReport
from vivace.bench.scores import Scores

SCHEMA = "vivace-bench"
VERSION = 1
_USERINFO = re.compile(r"(https?://)[^/@\s]+@")


class ReportFormatError(ValueError):
    """A file that is not a vivace bench JSON report of a version this code reads."""


def redact(text: str) -> str:
    """Drop credentials embedded in URLs (`https://user:key@host` -> `https://host`)."""
    return _USERINFO.sub(r"\1", text)


def _record_dict(record: RequestRecord) -> dict[str, Any]:
    data = asdict(record)
    data["chunks"] = [asdict(c) for c in record.chunks]
    return data


def _json_safe(value: Any) -> Any:
    """Infinite floats (a rate of inf: all requests at once) as the string "inf", which float() reads back."""
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def to_dict(result: BenchResult) -> dict[str, Any]:
    """The result as JSON-ready values in the versioned schema."""
    return _json_safe(
        {
            "schema": SCHEMA,
            "version": VERSION,
            "created": result.created,
            "target": redact(result.target),
            "workload": result.workload,
            "settings": result.settings,
            "judge": result.judge,
            "environment": result.environment,
            "levels": [
                {
                    "mode": lv.level.mode,
                    "value": lv.level.value,
                    "label": lv.level.label,
                    "duration": lv.level.duration,
                    "summary": lv.summary.to_dict(),
                    "scores": lv.scores.to_dict(),
                    "requests": [_record_dict(r) for r in lv.level.records],
                }
                for lv in result.levels
            ],
        }
    )


def from_dict(data: Any) -> BenchResult:
    """Read a result back from its JSON values; other schemas or versions raise ReportFormatError."""
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ReportFormatError('not a vivace bench report (no "schema": "vivace-bench")')
    if data.get("version") != VERSION:
        raise ReportFormatError(
            f"vivace bench report version {data.get('version')!r}; this vivace reads version {VERSION}"
        )
    try:
        levels = []
        for lv in data["levels"]:
            records = [RequestRecord(**{**r, "chunks": [Chunk(**c) for c in r["chunks"]]}) for r in lv["requests"]]
            level = LevelResult(mode=lv["mode"], value=float(lv["value"]), duration=lv["duration"], records=records)
            levels.append(
                LevelReport(level=level, summary=Summary.from_dict(lv["summary"]), scores=Scores(**lv["scores"]))
            )
        return BenchResult(
            target=data["target"],
            workload=data["workload"],
            settings=data["settings"],
            created=data["created"],
            levels=levels,
            judge=data.get("judge"),
            environment=data.get("environment"),
        )
    except (KeyError, TypeError) as e:
        raise ReportFormatError(f"malformed vivace bench report: {type(e).__name__}: {e}") from None


def write_json(result: BenchResult, path: str | Path) -> None:
    """Write the JSON report."""
    Path(path).write_text(json.dumps(to_dict(result), indent=1) + "\n", encoding="utf-8")


def read_json(path: str | Path) -> BenchResult:
    """Read a JSON report written by `write_json`."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ReportFormatError(f"cannot read {path}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise ReportFormatError(f"{path}: not JSON ({e.msg} at line {e.lineno})") from None
    try:
        return from_dict(data)
    except ReportFormatError as e:
        raise ReportFormatError(f"{path}: {e}") from None
