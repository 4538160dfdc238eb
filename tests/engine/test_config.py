"""SamplingParams and EngineConfig reject bad values by name, before anything reaches the sampler."""

from __future__ import annotations

import math

import pytest

from vivace.engine.config import EngineConfig, InvalidParameterError, SamplingParams


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", -0.1),
        ("temperature", math.inf),
        ("temperature", math.nan),
        ("top_p", 0.0),
        ("top_p", math.nan),
        ("min_p", 1.5),
        ("repetition_penalty", 0.0),
        ("repetition_penalty", math.inf),
        ("presence_penalty", 2.5),
        ("frequency_penalty", math.nan),
        ("logit_bias", {5: 101.0}),
        ("logit_bias", {5: math.nan}),
        ("logit_bias", {5: -math.inf}),
        ("seed", 2**64),
        ("seed", -(2**63) - 1),
        ("max_tokens", 0),
        ("logprobs", 21),
        ("n", 0),
        ("stop", [""]),
    ],
)
def test_bad_sampling_values_name_their_field(field: str, value: object) -> None:
    with pytest.raises(InvalidParameterError) as caught:
        SamplingParams(**{field: value})
    assert caught.value.param == field


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": 0.0},
        {"temperature": 1e300},
        {"top_p": 1e-300},
        {"min_p": 1.0},
        {"logit_bias": {5: -100.0, 6: 100.0}},
        {"seed": -(2**63)},
        {"seed": 2**64 - 1},
        {"top_k": -1},
    ],
)
def test_edge_values_are_accepted(kwargs: dict) -> None:
    SamplingParams(**kwargs)


def test_engine_config_names_the_field() -> None:
    with pytest.raises(InvalidParameterError, match="device"):
        EngineConfig(device="tpu")
    with pytest.raises(InvalidParameterError, match="kv_cache_memory_fraction"):
        EngineConfig(kv_cache_memory_fraction=1.5)
