"""What CPU this process runs on, read once from /proc/cpuinfo (or what the platform says elsewhere)."""

from __future__ import annotations

import functools
import platform


@functools.cache
def read_cpuinfo() -> str:
    """/proc/cpuinfo's text; off Linux, a `model name` line with the processor string the platform offers."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return f"model name: {platform.processor()}"


def cpu_model_name() -> str:
    """The CPU's model name (its first `model name` line), else the processor or machine string."""
    for line in read_cpuinfo().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return " ".join(value.split())
    return platform.processor() or platform.machine()
