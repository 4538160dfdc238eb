"""Request fields -> SamplingParams: the mapping itself, and that every front door goes through it."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from vivace import batch_io, cli
from vivace.engine.config import InvalidParameterError, SamplingParams
from vivace.engine.request_params import SamplingFieldTypeError, sampling_params_from_fields
from vivace.providers import local
from vivace.providers.base import GenerationRequest, ProviderError
from vivace.server import protocol
from vivace.server.protocol import ChatCompletionRequest, CompletionRequest

# --- the mapping ---


def test_no_fields_is_the_default():
    assert sampling_params_from_fields({}) == SamplingParams()


def test_openai_chat_fields():
    fields = {
        "n": 2,
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "min_p": 0.05,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "repetition_penalty": 1.1,
        "seed": 11,
        "stop": "END",
        "max_tokens": 99,
        "max_completion_tokens": 7,
        "min_tokens": 2,
        "ignore_eos": True,
        "logprobs": True,
        "top_logprobs": 3,
        "logit_bias": {"42": -100, "7": 2.5},
    }
    assert sampling_params_from_fields(fields) == SamplingParams(
        n=2,
        temperature=0.5,
        top_p=0.9,
        top_k=40,
        min_p=0.05,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        repetition_penalty=1.1,
        seed=11,
        stop=["END"],
        max_tokens=7,  # max_completion_tokens wins
        min_tokens=2,
        ignore_eos=True,
        logprobs=3,
        logit_bias={42: -100.0, 7: 2.5},
    )


def test_engine_fields_pass_through():
    fields = {"stop": ["a", "b"], "stop_token_ids": [5, 6], "skip_special_tokens": False, "logprobs": 4, "top_k": -1}
    assert sampling_params_from_fields(fields) == SamplingParams(
        stop=["a", "b"], stop_token_ids=[5, 6], skip_special_tokens=False, logprobs=4, top_k=0
    )


def test_none_is_not_given_except_max_tokens_where_it_is_no_limit():
    assert sampling_params_from_fields({"max_tokens": None, "temperature": None, "stop": None, "seed": None}) == (
        SamplingParams(max_tokens=None)
    )
    assert sampling_params_from_fields({"max_completion_tokens": None, "max_tokens": 5}).max_tokens == 5
    assert sampling_params_from_fields({"temperature": None}).max_tokens == SamplingParams().max_tokens


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, None),
        ({"logprobs": False}, None),
        ({"logprobs": True}, 0),
        ({"logprobs": True, "top_logprobs": 4}, 4),
        ({"logprobs": 0}, 0),
        ({"logprobs": 5}, 5),
    ],
)
def test_logprobs_as_bool_or_count(fields, expected):
    assert sampling_params_from_fields(fields).logprobs == expected


def test_numbers_are_normalised():
    params = sampling_params_from_fields({"max_tokens": 5.0, "temperature": 1, "logit_bias": {3: 1}})
    assert params.max_tokens == 5 and type(params.max_tokens) is int
    assert params.temperature == 1.0 and type(params.temperature) is float
    assert params.logit_bias == {3: 1.0}
    assert sampling_params_from_fields({"logit_bias": {}}).logit_bias is None


@pytest.mark.parametrize(
    ("fields", "param", "message"),
    [
        ({"max_tokens": 0}, "max_tokens", "must be >= 1, got 0"),
        ({"max_completion_tokens": 0, "max_tokens": 5}, "max_completion_tokens", "must be >= 1, got 0"),
        ({"top_logprobs": 2}, "top_logprobs", "requires logprobs to be true"),
        ({"logprobs": False, "top_logprobs": 2}, "top_logprobs", "requires logprobs to be true"),
        ({"logprobs": 2, "top_logprobs": 2}, "top_logprobs", "requires logprobs to be true"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "must be in [0, 20], got 21"),
        ({"logprobs": 21}, "logprobs", "must be in [0, 20], got 21"),
        ({"logit_bias": {"x": 1}}, "logit_bias", "keys must be token ids, got 'x'"),
        ({"logit_bias": {"5": 101}}, "logit_bias", "values must be in [-100, 100], got 101.0"),
        ({"temperature": -1}, "temperature", "must be >= 0 and finite"),
        ({"n": 0}, "n", "must be >= 1"),
        ({"seed": 2**64}, "seed", "must fit in 64 bits"),
        ({"stop": ""}, "stop", "stop strings must be non-empty"),
        ({"min_tokens": 5, "max_tokens": 2}, "min_tokens", "must be <= max_tokens (2), got 5"),
        ({"frobnicate": 1}, "frobnicate", "unknown sampling field"),
    ],
)
def test_range_errors_name_the_field(fields, param, message):
    with pytest.raises(InvalidParameterError) as info:
        sampling_params_from_fields(fields)
    assert info.value.param == param
    assert str(info.value).startswith(f"{param}: ")
    assert message in str(info.value)
    assert not isinstance(info.value, TypeError)


@pytest.mark.parametrize(
    ("fields", "param", "message"),
    [
        ({"top_p": "high"}, "top_p", "top_p: must be a number, got 'high'"),
        ({"temperature": True}, "temperature", "temperature: must be a number, got True"),
        ({"n": 1.5}, "n", "n: must be an integer, got 1.5"),
        ({"max_tokens": "5"}, "max_tokens", "max_tokens: must be an integer, got '5'"),
        ({"logprobs": "yes"}, "logprobs", "logprobs: must be an integer, got 'yes'"),
        ({"ignore_eos": 1}, "ignore_eos", "ignore_eos: must be true or false, got 1"),
        ({"stop": ["a", 1]}, "stop", "stop: must be a string or a list of strings"),
        ({"stop_token_ids": [1, "2"]}, "stop_token_ids", "stop_token_ids: must be a list of token ids"),
        ({"logit_bias": [1, 2]}, "logit_bias", "logit_bias: must be an object of token id -> bias"),
        ({"logit_bias": {"1": "x"}}, "logit_bias", "logit_bias: values must be numbers, got 'x'"),
    ],
)
def test_type_errors_name_the_field(fields, param, message):
    with pytest.raises(SamplingFieldTypeError) as info:
        sampling_params_from_fields(fields)
    assert info.value.param == param and str(info.value).startswith(message)
    assert isinstance(info.value, InvalidParameterError) and isinstance(info.value, TypeError)


# --- every front door goes through it ---


@pytest.fixture
def calls(monkeypatch) -> list[dict]:
    """The fields each front door hands to sampling_params_from_fields (which still does the work)."""
    seen: list[dict] = []

    def record(fields):
        seen.append(dict(fields))
        return sampling_params_from_fields(fields)

    for module in (protocol, local, batch_io, cli):
        monkeypatch.setattr(module, "sampling_params_from_fields", record)
    return seen


COMMON = {"temperature": 0.5, "top_p": 0.9, "top_k": 3, "seed": 7, "max_tokens": 5}
EXPECTED = SamplingParams(temperature=0.5, top_p=0.9, top_k=3, seed=7, max_tokens=5)


def test_server_chat(calls):
    body = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **COMMON, "stop": "x",
         "logprobs": True, "top_logprobs": 2, "logit_bias": {"3": 1}}
    )  # fmt: skip
    assert body.sampling_params() == SamplingParams(
        temperature=0.5, top_p=0.9, top_k=3, seed=7, max_tokens=5, stop=["x"], logprobs=2, logit_bias={3: 1.0}
    )
    assert len(calls) == 1 and calls[0]["top_logprobs"] == 2 and calls[0]["logit_bias"] == {"3": 1.0}


def test_server_chat_max_completion_tokens_and_no_limit(calls):
    base = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert ChatCompletionRequest.model_validate(base).sampling_params() == SamplingParams(max_tokens=None)
    body = ChatCompletionRequest.model_validate({**base, "max_completion_tokens": 0})
    with pytest.raises(InvalidParameterError) as info:
        body.sampling_params()
    assert info.value.param == "max_completion_tokens"
    assert len(calls) == 2


def test_server_completion(calls):
    body = CompletionRequest.model_validate({"model": "m", "prompt": "hi", **COMMON, "logprobs": 1})
    assert body.sampling_params() == SamplingParams(
        temperature=0.5, top_p=0.9, top_k=3, seed=7, max_tokens=5, logprobs=1
    )
    assert len(calls) == 1


def test_local_provider(calls):
    request = GenerationRequest(prompt="x", **COMMON, stop=["."], extra={"logit_bias": {"5": 2}, "min_p": 0.1})
    assert local.sampling_params_for(request) == SamplingParams(
        temperature=0.5, top_p=0.9, top_k=3, seed=7, max_tokens=5, stop=["."], logit_bias={5: 2.0}, min_p=0.1
    )
    assert GenerationRequest(prompt="x").max_tokens is None  # the provider's "no limit"
    assert local.sampling_params_for(GenerationRequest(prompt="x")) == SamplingParams(max_tokens=None)
    with pytest.raises(ProviderError, match=r"^top_p: must be a number") as info:
        local.sampling_params_for(GenerationRequest(prompt="x", top_p="high"))  # type: ignore[arg-type]
    assert info.value.status == 400
    assert len(calls) == 3


def test_batch_line(calls):
    item = batch_io.parse_line(0, json.dumps({"prompt": "a", **COMMON, "max_tokens": 9}), {"max_tokens": 4, "top_k": 1})
    assert isinstance(item, batch_io.BatchRequest)
    assert item.sampling_params == SamplingParams(temperature=0.5, top_p=0.9, top_k=3, seed=7, max_tokens=9)
    assert calls == [{**COMMON, "max_tokens": 9}]
    error = batch_io.parse_line(1, '{"prompt": "a", "top_p": "high"}')
    assert isinstance(error, batch_io.BatchError)
    assert error.error == "invalid sampling field: top_p: must be a number, got 'high'"


def test_cli_options(calls, monkeypatch):
    seen: list[SamplingParams] = []
    fake = SimpleNamespace(
        tokenizer=SimpleNamespace(encode_chat=lambda messages: [1]),
        stream=lambda prompt, params: seen.append(params) or (out for out in ()),  # a closable stream, as LLM's
    )
    monkeypatch.setattr(cli, "_load", lambda model, device, speculative=None: fake)
    args = [
        "generate",
        "hi",
        "--temperature",
        "0.5",
        "--top-p",
        "0.9",
        "--top-k",
        "3",
        "--seed",
        "7",
        "--max-tokens",
        "5",
    ]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    assert seen == [EXPECTED]
    assert calls == [COMMON]
