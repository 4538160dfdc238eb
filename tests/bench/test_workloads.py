"""Workloads: random prompts of exact token lengths, the built-in chat set, JSONL files."""

from __future__ import annotations

import json

import pytest

from vivace.bench.chat_prompts import CHAT_PROMPTS
from vivace.bench.tokens import load_tokenizer
from vivace.bench.workloads import WorkloadError, chat_workload, jsonl_workload, random_workload, sample_lengths


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.mark.parametrize("dist", ["fixed", "uniform", "normal"])
def test_random_prompts_have_exact_token_lengths(tokenizer, dist):
    items = random_workload(tokenizer, 12, 40, 9, dist=dist, spread=0.5, seed=3)
    assert len(items) == 12
    for item in items:
        assert item.request.prompt is not None and item.request.messages is None
        assert len(tokenizer.encode(item.request.prompt, add_special_tokens=False)) == item.input_tokens
        assert item.request.ignore_eos is True
    inputs = [item.input_tokens for item in items]
    outputs = [item.request.max_tokens for item in items]
    if dist == "fixed":
        assert inputs == [40] * 12 and outputs == [9] * 12
    else:
        assert len(set(inputs)) > 1  # the lengths really vary
    if dist == "uniform":
        assert all(20 <= n <= 60 for n in inputs)


def test_random_workload_is_reproducible_by_seed(tokenizer):
    a = random_workload(tokenizer, 3, 20, 5, seed=1)
    b = random_workload(tokenizer, 3, 20, 5, seed=1)
    c = random_workload(tokenizer, 3, 20, 5, seed=2)
    assert [i.request.prompt for i in a] == [i.request.prompt for i in b]
    assert [i.request.prompt for i in a] != [i.request.prompt for i in c]


def test_sample_lengths_errors():
    with pytest.raises(WorkloadError, match="unknown length distribution 'zipf'"):
        sample_lengths(3, 10, "zipf")
    with pytest.raises(WorkloadError, match="spread must be in 0..1"):
        sample_lengths(3, 10, "uniform", 2.0)
    with pytest.raises(WorkloadError, match="length >= 1"):
        sample_lengths(3, 0)
    assert min(sample_lengths(200, 2, "normal", 1.0)) >= 1


def test_chat_workload_cycles_the_builtin_prompts():
    assert len(set(CHAT_PROMPTS)) >= 30
    items = chat_workload(len(CHAT_PROMPTS) + 2, max_tokens=7)
    assert items[0].request.messages == [{"role": "user", "content": CHAT_PROMPTS[0]}]
    assert items[len(CHAT_PROMPTS)].request.messages == items[0].request.messages
    assert {i.request.max_tokens for i in items} == {7}


def test_jsonl_workload(tmp_path):
    path = tmp_path / "w.jsonl"
    path.write_text(
        json.dumps({"prompt": "Once upon a time", "max_tokens": 5, "temperature": 0})
        + "\n\n"
        + json.dumps({"messages": [{"role": "user", "content": "Hi"}]})
        + "\n"
    )
    items = jsonl_workload(path, default_max_tokens=11)
    assert [i.request.prompt for i in items] == ["Once upon a time", None]
    assert items[0].request.max_tokens == 5 and items[0].request.temperature == 0
    assert items[1].request.messages == [{"role": "user", "content": "Hi"}] and items[1].request.max_tokens == 11


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"w.jsonl:2: invalid JSON"),
        ('{"max_tokens": 3}', r"w.jsonl:2: needs exactly one of 'prompt'"),
        ('{"prompt": "a", "max_tokens": 0}', r"w.jsonl:2: 'max_tokens' must be a positive integer"),
        ('["a"]', r"w.jsonl:2: expected a JSON object"),
    ],
)
def test_jsonl_errors_name_the_line(tmp_path, line, message):
    path = tmp_path / "w.jsonl"
    path.write_text('{"prompt": "ok"}\n' + line + "\n")
    with pytest.raises(WorkloadError, match=message):
        jsonl_workload(path)


def test_missing_jsonl_file(tmp_path):
    with pytest.raises(WorkloadError, match="cannot read workload file"):
        jsonl_workload(tmp_path / "absent.jsonl")
