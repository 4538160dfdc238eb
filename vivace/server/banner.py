"""What `vivace serve` prints once it is listening: the model, its cache, the machine, and where to go."""

from __future__ import annotations

import math

import torch

from vivace import __version__
from vivace.cpu_info import cpu_model_name
from vivace.engine.engine import LLMEngine
from vivace.engine.loaders.default_model import default_model_path
from vivace.server.listen import display_url


def parameter_count(engine: LLMEngine) -> int:
    """The model's weights counted from its layout (GGUF blocks hold the same number, just packed)."""
    shapes = type(engine.model).weight_shapes(engine.model_config)
    return sum(math.prod(shape) for shape in shapes.values())


def human_count(n: int) -> str:
    """134,515,008 -> '134.5M'."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def device_description(device: str) -> str:
    """The device and what it is: the GPU's name, or the CPU's model."""
    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"cpu ({cpu_model_name()})"


def startup_banner(engine: LLMEngine, name: str, host: str, port: int) -> str:
    """The banner: one labelled line per fact, the URLs last where the eye lands."""
    config, shape = engine.config, engine.model_config
    kv_blocks = engine.scheduler.kv.num_blocks
    kv_tokens = kv_blocks * config.block_size
    kv_mib = kv_tokens * engine.model.kv_slot_bytes(engine.kv_dtype) / (1 << 20)
    url = display_url(host, port)
    rows = [
        ("model", f"{name} ({config.model or default_model_path()})"),
        (
            "arch",
            f"{shape.architecture}, {human_count(parameter_count(engine))} parameters, {shape.num_layers} layers, "
            f"vocabulary {shape.vocab_size:,}",
        ),
        (
            "weights",
            f"{config.resolved_quantization} quantization, {config.resolved_dtype} activations, "
            f"{engine.kernels.name} kernels",
        ),
        ("context", f"{engine.max_model_len:,} tokens"),
        (
            "KV cache",
            f"{kv_tokens:,} tokens, {kv_mib:,.1f} MiB ({config.resolved_kv_cache_dtype}, "
            f"{kv_blocks:,} blocks of {config.block_size})",
        ),
        ("batch", f"{config.max_num_seqs} sequences, {config.max_num_batched_tokens:,} tokens per step"),
        ("threads", f"{torch.get_num_threads()} (torch intra-op)"),
        ("device", device_description(config.device)),
        ("web UI", f"{url}/"),
        ("API", f"{url}/v1"),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [f"vivace {__version__} ready"] + [f"  {label:<{width}}  {value}" for label, value in rows]
    return "\n".join(lines)
