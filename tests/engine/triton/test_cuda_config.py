"""What the engine config resolves to on CUDA vs CPU (pure; no device needed)."""

from __future__ import annotations

import pytest

from vivace.engine.config import EngineConfig, InvalidParameterError


def test_cpu_defaults_are_unchanged() -> None:
    cfg = EngineConfig()
    assert (cfg.resolved_dtype, cfg.resolved_quantization, cfg.resolved_kv_cache_dtype) == ("float32", "int8", "bfloat16")
    assert cfg.resolved_attention_backend == "auto"
    assert cfg.resolved_kv_cache_memory_fraction == 0.10


def test_cuda_defaults_are_bf16_triton_and_most_free_memory() -> None:
    cfg = EngineConfig(device="cuda:0")
    assert (cfg.resolved_dtype, cfg.resolved_quantization, cfg.resolved_kv_cache_dtype) == ("bfloat16", "none", "bfloat16")
    assert cfg.resolved_attention_backend == "triton"
    assert cfg.resolved_kv_cache_memory_fraction == 0.85
    assert cfg.cuda_graphs


def test_explicit_choices_win() -> None:
    cfg = EngineConfig(device="cuda", dtype="float32", attention_backend="torch", kv_cache_memory_fraction=0.5)
    assert (cfg.resolved_dtype, cfg.resolved_attention_backend, cfg.resolved_kv_cache_memory_fraction) == ("float32", "torch", 0.5)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"dtype": "float64"}, "dtype: must be auto, float32, bfloat16 or float16, got 'float64'"),
        ({"attention_backend": "flash"}, "attention_backend: must be 'auto', 'torch' or 'triton', got 'flash'"),
        ({"kv_cache_memory_fraction": 0.0}, "kv_cache_memory_fraction: must be in"),
    ],
)
def test_bad_values_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidParameterError, match=message.replace("(", "\\(")):
        EngineConfig(**kwargs)
