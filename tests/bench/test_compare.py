"""`vivace bench compare`: leaderboards fastest first by TTFT, tokens/s and total time."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from vivace.bench.compare import CompareError, entry, load_entries, ranked
from vivace.bench.records import Chunk, LevelResult, RequestRecord
from vivace.bench.report_json import write_json
from vivace.bench.result import BenchResult, level_report
from vivace.cli import app


def _result(target: str, ttft: float, tokens: int, duration: float) -> BenchResult:
    """One level of one request: first token at `ttft`, `tokens` output tokens, `duration` s of wall time."""
    record = RequestRecord(
        index=0,
        send=0.0,
        end=duration,
        prompt_tokens=3,
        output_tokens=tokens,
        chunks=[Chunk(ttft, "x", 1), Chunk(duration, "y", tokens - 1)],
    )
    result = BenchResult(target=target, workload={}, settings={}, created="2026-11-25T00:00:00+00:00")
    result.levels.append(level_report(LevelResult("concurrency", 1, duration, [record]), None, None))
    result.levels.append(level_report(LevelResult("concurrency", 4, duration / 2, [record]), None, None))
    return result


# fast first token but few tokens/s; slow first token, most tokens/s; in between, shortest total time
A = ("a:fast-first", 0.1, 20, 4.0)  # 5 tok/s
B = ("b:high-throughput", 0.9, 100, 5.0)  # 20 tok/s
C = ("c:short", 0.5, 30, 2.0)  # 15 tok/s


def test_rankings():
    entries = [entry(_result(*spec), spec[0]) for spec in (A, B, C)]
    assert [e.target for e in ranked(entries, "ttft")] == ["a:fast-first", "c:short", "b:high-throughput"]
    assert [e.target for e in ranked(entries, "tokens_per_s")] == ["b:high-throughput", "c:short", "a:fast-first"]
    assert [e.target for e in ranked(entries, "total_time")] == ["c:short", "a:fast-first", "b:high-throughput"]
    assert entries[1].tokens_per_s == pytest.approx(20.0)
    with pytest.raises(CompareError, match="unknown ranking"):
        ranked(entries, "price")


def test_level_choice(tmp_path):
    path = tmp_path / "a.json"
    write_json(_result(*A), path)
    assert load_entries([path])[0].level == "c=1"
    (e,) = load_entries([path], level="c=4")
    assert e.level == "c=4" and e.total_time == pytest.approx(2.0)
    with pytest.raises(CompareError, match="no level 'c=8'; it has c=1, c=4"):
        load_entries([path], level="c=8")


def test_compare_command_prints_three_leaderboards(tmp_path):
    paths = []
    for spec in (A, B, C):
        paths.append(tmp_path / f"{spec[0].split(':')[0]}.json")
        write_json(_result(*spec), paths[-1])
    out = CliRunner().invoke(app, ["bench", "compare", *map(str, paths)], terminal_width=200)
    assert out.exit_code == 0, out.output
    boards = out.output.split("shortest total time")
    first_token, tokens = boards[0].split("most output tokens/s")
    assert first_token.index("a:fast-first") < first_token.index("c:short") < first_token.index("b:high-throughput")
    assert tokens.index("b:high-throughput") < tokens.index("c:short") < tokens.index("a:fast-first")
    assert boards[1].index("c:short") < boards[1].index("a:fast-first") < boards[1].index("b:high-throughput")


def test_compare_refuses_a_file_that_is_not_a_report(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"hello": 1}')
    out = CliRunner().invoke(app, ["bench", "compare", str(bad)], env={"COLUMNS": "200"})
    assert out.exit_code == 2
    assert "not a vivace bench report" in out.output
