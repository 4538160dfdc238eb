"""What a benchmark ran on: the machine, the package versions and (for `local:`) the engine's configuration.

Recorded in every report, so two runs are never compared without seeing what differed.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from vivace.cpu_info import cpu_model_name
from vivace.providers.base import Provider

PACKAGES = ("vivace", "torch", "triton", "transformers", "httpx", "openai", "fastapi", "uvicorn", "matplotlib")


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30), 1)
    except (ValueError, OSError, AttributeError):
        return None


def _gpus() -> list[str]:
    """GPU names from nvidia-smi (without importing torch, which a remote benchmark does not need)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that decide a run's speed; missing ones are left out."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def engine_configuration(provider: Provider) -> dict[str, Any] | None:
    """A `local:` target's engine: its config as resolved, kernels and threads; None for remote targets."""
    from vivace.providers.local import LocalProvider

    if not isinstance(provider, LocalProvider):
        return None
    import torch

    engine = provider.engine.engine
    config = engine.config
    return {
        **{k: v for k, v in asdict(config).items() if isinstance(v, str | int | float | bool | type(None))},
        "resolved_dtype": config.resolved_dtype,
        "resolved_quantization": config.resolved_quantization,
        "resolved_kv_cache_dtype": config.resolved_kv_cache_dtype,
        "kernels": engine.kernels.name,
        "max_model_len": engine.max_model_len,
        "kv_cache_tokens": engine.scheduler.kv.num_blocks * config.block_size,
        "torch_threads": torch.get_num_threads(),
    }


def run_environment(provider: Provider) -> dict[str, Any]:
    """The machine, packages and engine configuration of a run, as JSON-ready values."""
    return {
        "hardware": {
            "cpu": cpu_model_name(),
            "cpu_count": os.cpu_count(),
            "memory_gib": _memory_gib(),
            "gpus": _gpus(),
            "machine": platform.machine(),
        },
        "software": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "packages": package_versions(),
        },
        "engine": engine_configuration(provider),
    }
