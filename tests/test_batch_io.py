"""JSONL parsing, resume and writing for `vivace batch`, without a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vivace.batch_io import (
    BatchError,
    BatchOutputError,
    BatchRequest,
    ResultWriter,
    error_record,
    parse_line,
    prepare_output,
    read_requests,
    result_record,
)


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_prompt_line_merges_defaults_and_overrides():
    req = parse_line(3, '{"id": "a", "prompt": "hi", "max_tokens": 5, "stop": "\\n"}', {"temperature": 0.5})
    assert isinstance(req, BatchRequest)
    assert (req.index, req.id, req.prompt, req.messages) == (3, "a", "hi", None)
    assert req.sampling_params.max_tokens == 5
    assert req.sampling_params.temperature == 0.5
    assert req.sampling_params.stop == ["\n"]


def test_messages_line_and_token_id_prompt():
    msgs = [{"role": "user", "content": "hello"}]
    req = parse_line(0, json.dumps({"messages": msgs, "temperature": 0}))
    assert isinstance(req, BatchRequest) and req.messages == msgs and req.id is None
    assert req.sampling_params.greedy
    req = parse_line(1, '{"prompt": [1, 2, 3]}')
    assert isinstance(req, BatchRequest) and req.prompt == [1, 2, 3]


def test_logit_bias_keys_become_token_ids():
    req = parse_line(0, '{"prompt": "x", "logit_bias": {"42": -100}}')
    assert isinstance(req, BatchRequest)
    assert req.sampling_params.logit_bias == {42: -100.0}


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"id": 7}', "exactly one of"),
        ('{"prompt": "a", "messages": [{"role": "user", "content": "b"}]}', "exactly one of"),
        ('{"prompt": ""}', "'prompt' must be"),
        ('{"prompt": 12}', "'prompt' must be"),
        ('{"messages": [{"role": "user"}]}', "'messages' must be"),
        ('{"prompt": "a", "max_token": 5}', "unknown field"),
        ('{"prompt": "a", "n": 2}', "unknown field"),
        ('{"prompt": "a", "temperature": -1}', "temperature"),
        ('{"prompt": "a", "top_p": "high"}', "invalid sampling field"),
        ('{"prompt": "a", "logit_bias": {"x": 1}}', "logit_bias"),
    ],
)
def test_invalid_lines_become_errors(line, needle):
    item = parse_line(4, line)
    assert isinstance(item, BatchError)
    assert item.index == 4
    assert needle in item.error


def test_invalid_line_keeps_its_id():
    item = parse_line(0, '{"id": "q9", "prompt": "a", "temperature": -1}')
    assert isinstance(item, BatchError) and item.id == "q9"


def test_read_requests_indexes_by_line_and_keeps_errors(tmp_path):
    path = tmp_path / "in.jsonl"
    write_lines(path, ['{"prompt": "a"}', "", "oops", '{"messages": [{"role": "user", "content": "b"}]}'])
    items = read_requests(path)
    assert [i.index for i in items] == [0, 2, 3]  # the blank line is skipped, not renumbered
    assert [type(i) for i in items] == [BatchRequest, BatchError, BatchRequest]


def test_prepare_output_missing_file(tmp_path):
    assert prepare_output(tmp_path / "out.jsonl") == set()


def test_prepare_output_reads_done_indices(tmp_path):
    path = tmp_path / "out.jsonl"
    write_lines(path, [json.dumps(result_record(2, "b", "x", "stop", 3, 1)), json.dumps(error_record(0, None, "bad"))])
    assert prepare_output(path) == {0, 2}


def test_prepare_output_truncates_partial_trailing_line(tmp_path):
    path = tmp_path / "out.jsonl"
    complete = json.dumps(result_record(1, None, "done", "length", 4, 8)) + "\n"
    path.write_text(complete + '{"index": 5, "id": null, "te', encoding="utf-8")
    assert prepare_output(path) == {1}
    assert path.read_text(encoding="utf-8") == complete
    # Appending after the cut gives a well-formed file.
    with ResultWriter(path) as w:
        w.write(result_record(5, None, "again", "stop", 2, 2))
    assert prepare_output(path) == {1, 5}


def test_prepare_output_only_partial_line(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"index": 0', encoding="utf-8")
    assert prepare_output(path) == set()
    assert path.read_bytes() == b""


def test_prepare_output_rejects_corrupt_complete_line(tmp_path):
    path = tmp_path / "out.jsonl"
    write_lines(path, ["garbage", json.dumps(error_record(0, None, "x"))])
    with pytest.raises(BatchOutputError, match=":1 "):
        prepare_output(path)
    write_lines(path, ['{"id": 1}'])
    with pytest.raises(BatchOutputError, match="index"):
        prepare_output(path)


def test_writer_appends_one_line_per_record_unicode(tmp_path):
    path = tmp_path / "out.jsonl"
    with ResultWriter(path) as w:
        w.write(result_record(0, "é", "naïve ☃", "stop", 1, 2))
        w.write(error_record(1, None, "bad"))
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [
        {
            "index": 0,
            "id": "é",
            "text": "naïve ☃",
            "finish_reason": "stop",
            "usage": {"prompt_tokens": 1, "completion_tokens": 2},
        },
        {"index": 1, "id": None, "error": "bad"},
    ]


def test_resume_skips_exactly_the_done_lines(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_lines(inp, [json.dumps({"id": i, "prompt": f"p{i}"}) for i in range(5)])
    with ResultWriter(out) as w:
        for i in (3, 0):
            w.write(result_record(i, i, "t", "stop", 1, 1))
    done = prepare_output(out)
    todo = [r.index for r in read_requests(inp) if r.index not in done]
    assert todo == [1, 2, 4]
