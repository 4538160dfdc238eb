"""The optional quality check: a judge provider scores reference answers 1..10 beside the speed."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from vivace.bench.judge import REFERENCE, parse_score
from vivace.bench.report_json import read_json
from vivace.cli import app


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("7", 7),
        ("Score: 10/10", 10),
        (" 3.", 3),
        ("I'd say 8 out of 10", 8),
        ("excellent", None),
        ("0", None),
        ("42", None),
    ],
)
def test_parse_score(reply, score):
    assert parse_score(reply) == score


@pytest.mark.slow
def test_judge_scores_reported_beside_speed(live, tmp_path):
    path = tmp_path / "r.json"
    out = CliRunner().invoke(
        app,
        [
            "bench",
            "run",
            live.url,
            "-n",
            "1",
            "--warmup",
            "0",
            "--max-tokens",
            "6",
            "--judge",
            live.url,
            "--json",
            str(path),
        ],
        env={"COLUMNS": "200"},
    )
    assert out.exit_code == 0, out.output
    judge = read_json(path).judge
    assert judge is not None and judge["judge"].startswith("openai-compatible:")
    assert [i["question"] for i in judge["items"]] == [q for q, _ in REFERENCE]
    for item in judge["items"]:  # a tiny model may answer or judge badly; every item is accounted for
        assert item["answer"] is not None
        assert (item["score"] is not None and 1 <= item["score"] <= 10) or "no score" in item["error"]
    assert judge["scored"] == sum(i["score"] is not None for i in judge["items"])
    assert "judge openai-compatible:" in out.output
