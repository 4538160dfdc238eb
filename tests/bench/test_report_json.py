"""The JSON report: a versioned schema that round-trips every request's timeline, without credentials."""

from __future__ import annotations

import json

import pytest

from tests.bench.timelines import level
from vivace.bench.report_json import ReportFormatError, from_dict, read_json, to_dict, write_json
from vivace.bench.result import BenchResult, level_report


def _result(target: str = "openai-compatible:m@http://127.0.0.1:8000/v1") -> BenchResult:
    result = BenchResult(
        target=target,
        workload={"kind": "chat", "max_tokens": 8},
        settings={"warmup": 1, "loads": [{"rate": float("inf")}]},
        created="2026-11-25T00:00:00+00:00",
    )
    result.levels.append(level_report(level(), {"ttft": 0.3}, None))
    result.levels.append(level_report(level(mode="rate", value=float("inf")), None, {"ttft": 1.0}))
    return result


def test_round_trip(tmp_path):
    result = _result()
    path = tmp_path / "r.json"
    write_json(result, path)
    text = path.read_text()
    assert "Infinity" not in text  # strict JSON
    data = json.loads(text)
    assert (data["schema"], data["version"]) == ("vivace-bench", 1)
    assert data["levels"][0]["requests"][0]["chunks"][2] == {"t": 0.35, "text": " world", "tokens": 2}
    assert data["levels"][0]["requests"][2]["error"] == "HTTP 500: boom"
    back = read_json(path)
    assert to_dict(back) == to_dict(result)
    assert back.levels[1].level.value == float("inf") and back.levels[1].level.label == "rate=inf/s"
    assert back.levels[0].summary == result.levels[0].summary
    assert back.levels[0].level.records == result.levels[0].level.records


def test_credentials_in_urls_are_never_written(tmp_path):
    path = tmp_path / "r.json"
    write_json(_result("openai-compatible:m@https://user:sk-secret-123@api.example.com/v1"), path)
    text = path.read_text()
    assert "sk-secret-123" not in text and "user:" not in text
    assert json.loads(text)["target"] == "openai-compatible:m@https://api.example.com/v1"


def test_other_schemas_and_versions_are_refused(tmp_path):
    data = to_dict(_result())
    with pytest.raises(ReportFormatError, match="version 2; this vivace reads version 1"):
        from_dict({**data, "version": 2})
    with pytest.raises(ReportFormatError, match="not a vivace bench report"):
        from_dict({"levels": []})
    del data["levels"][0]["summary"]
    with pytest.raises(ReportFormatError, match="malformed"):
        from_dict(data)
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(ReportFormatError, match="bad.json: not JSON"):
        read_json(bad)
