"""`vivace serve`'s engine options are generated from EngineConfig: every field has one, and each lands on it."""

from __future__ import annotations

import dataclasses

import pytest
import typer

from vivace.engine.config import EngineConfig
from vivace.engine_flags import FLAG_HELP, NOT_FLAGS, engine_config_kwargs, flag_name, parse_kv_cache_memory


def test_every_engine_config_field_has_a_flag_and_help():
    fields = {f.name for f in dataclasses.fields(EngineConfig)} - NOT_FLAGS
    assert set(FLAG_HELP) == fields  # a new field without an entry (or a stale entry) fails here


def test_vllm_names():
    assert flag_name("max_num_seqs") == "--max-num-seqs"
    assert flag_name("enable_prefix_caching") == "--enable-prefix-caching"
    assert flag_name("cuda_graphs") == "--enforce-eager"
    assert flag_name("kv_cache_memory_bytes") == "--kv-cache-memory"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.5", {"kv_cache_memory_fraction": 0.5}),
        ("1", {"kv_cache_memory_fraction": 1.0}),
        ("4GiB", {"kv_cache_memory_bytes": 4 * 2**30}),
        ("512MB", {"kv_cache_memory_bytes": 512 * 10**6}),
        ("1.5g", {"kv_cache_memory_bytes": 1_500_000_000}),
        ("1000000", {"kv_cache_memory_bytes": 1_000_000}),
    ],
)
def test_kv_cache_memory_takes_bytes_or_a_fraction(value, expected):
    assert parse_kv_cache_memory(value) == expected
    EngineConfig(**expected)  # and EngineConfig accepts it


@pytest.mark.parametrize("value", ["lots", "-1", "4 GiB of it", ""])
def test_bad_kv_cache_memory_is_a_usage_error(value):
    with pytest.raises(typer.BadParameter):
        parse_kv_cache_memory(value)


def test_options_not_given_are_left_to_engine_config_defaults():
    assert engine_config_kwargs({"seed": None, "cuda_graphs": False, "kv_cache_memory_bytes": None}) == {}
    assert engine_config_kwargs({"cuda_graphs": True, "enable_prefix_caching": False}) == {
        "cuda_graphs": False,
        "enable_prefix_caching": False,
    }


def test_lora_modules_take_name_path_or_vllm_json():
    from vivace.engine_flags import parse_lora_modules

    assert engine_config_kwargs({"lora_modules": ["a=/x/a", '{"name": "b", "path": "/x/b"}']}) == {
        "lora_modules": {"a": "/x/a", "b": "/x/b"}
    }
    assert engine_config_kwargs({"lora_modules": None}) == {}
    for bad in (["just-a-name"], ["=path"], ["a=/x", "a=/y"], ['{"name": "b"}']):
        with pytest.raises(typer.BadParameter):
            parse_lora_modules(bad)
