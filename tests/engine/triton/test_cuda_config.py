"""What the engine config resolves to on CUDA vs CPU (pure; no device needed)."""

from __future__ import annotations

import pytest
import torch

from vivace.engine.config import EngineConfig, InvalidParameterError
from vivace.engine.cpu_ops import load_cpu_ops
from vivace.engine.kernels.select import resolve_backend


def test_cpu_defaults_are_unchanged() -> None:
    cfg = EngineConfig()
    assert (cfg.resolved_dtype, cfg.resolved_quantization, cfg.resolved_kv_cache_dtype) == (
        "float32",
        "gguf",
        "float16",  # llama.cpp's KV format: closer to float32's predictions than bfloat16 (bench/quality_cpu.py)
    )
    assert EngineConfig(quantization="int8").resolved_kv_cache_dtype == "float16"
    assert EngineConfig(quantization="none").resolved_kv_cache_dtype == "float32"
    assert EngineConfig(device="cuda", quantization="int8").resolved_kv_cache_dtype == "bfloat16"
    assert resolve_backend(cfg, torch.float32) == ("cpu" if load_cpu_ops() is not None else "torch")
    assert resolve_backend(cfg, torch.bfloat16) == "torch"  # the C++ ops are float32
    assert cfg.resolved_kv_cache_memory_fraction == 0.10


def test_cuda_defaults_are_bf16_triton_and_most_free_memory() -> None:
    cfg = EngineConfig(device="cuda:0")
    assert (cfg.resolved_dtype, cfg.resolved_quantization, cfg.resolved_kv_cache_dtype) == (
        "bfloat16",
        "none",
        "bfloat16",
    )
    assert resolve_backend(cfg, torch.bfloat16) == "triton"
    assert cfg.resolved_kv_cache_memory_fraction == 0.85
    assert cfg.cuda_graphs


def test_explicit_choices_win() -> None:
    cfg = EngineConfig(device="cuda", dtype="float32", attention_backend="torch", kv_cache_memory_fraction=0.5)
    assert (cfg.resolved_dtype, resolve_backend(cfg, torch.float32), cfg.resolved_kv_cache_memory_fraction) == (
        "float32",
        "torch",
        0.5,
    )


def test_the_cpu_set_is_float32_on_the_cpu_only() -> None:
    for cfg, dtype in (
        (EngineConfig(device="cuda", attention_backend="cpu"), torch.float32),
        (EngineConfig(attention_backend="cpu"), torch.bfloat16),
    ):
        with pytest.raises(InvalidParameterError, match="attention_backend: 'cpu' runs float32 on the CPU only"):
            resolve_backend(cfg, dtype)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"dtype": "float64"}, "dtype: must be auto, float32, bfloat16 or float16, got 'float64'"),
        ({"attention_backend": "flash"}, "attention_backend: must be 'auto', 'torch', 'cpu' or 'triton', got 'flash'"),
        ({"kv_cache_memory_fraction": 0.0}, "kv_cache_memory_fraction: must be in"),
    ],
)
def test_bad_values_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidParameterError, match=message.replace("(", "\\(")):
        EngineConfig(**kwargs)
