"""C++ CPU ops (paged attention of decode and prefill rows, tiled over keys with an online softmax, and
the K/V write before it, fused int8 linear, the linear on GGUF 4/8-bit blocks
(torch.ops.vivace_cpu.block_linear), RMSNorm alone and after the residual add, rotary, SwiGLU, row
argmax, the gathered multi-LoRA product), compiled on first use with torch's extension builder; None
when no compiler is available. Each has a torch reference it must match (tested).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import sys
from types import ModuleType

from vivace.cpu_info import read_cpuinfo

log = logging.getLogger(__name__)

_SOURCES = [
    os.path.join(os.path.dirname(__file__), "csrc", name)
    for name in (
        "module.cpp",
        "paged_attention.cpp",
        "int8_linear.cpp",
        "rms_norm.cpp",
        "argmax.cpp",
        "elementwise.cpp",
        "store_kv.cpp",
        "block_linear.cpp",
        "lora.cpp",
        "llama_stack.cpp",
    )
]
_HEADERS = [  # in the build key, not compiled alone
    os.path.join(os.path.dirname(__file__), "csrc", name) for name in ("simd_exp.h", "int8_kv_row.h")
]


def cpu_fingerprint(cpuinfo: str, machine: str) -> str:
    """A short digest of what `-march=native` compiles for: the CPU model and its instruction-set flags."""
    keys = ("model name", "flags", "Features", "CPU implementer", "CPU part")  # x86, then Arm's names
    first: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in keys:
            first.setdefault(key.strip(), " ".join(sorted(value.split())))
    described = "\n".join([machine, *(f"{k}={first[k]}" for k in keys if k in first)])
    return hashlib.sha256(described.encode()).hexdigest()[:12]


def build_key(cpu: str, sources: list[bytes], flags: list[str], torch_version: str, paths: list[str]) -> str:
    """What a built module depends on: the CPU it is compiled for (-march=native), its sources, compiler
    flags, the torch it links against, and the paths its compile commands name (the sources' folder,
    torch's headers: ninja recompiles every object whose command changed, so two checkouts of the same
    sources at different paths sharing one folder would rebuild it for each other, turn by turn).
    Installs that differ in any of them never share a build folder."""
    digest = hashlib.sha256("\n".join([cpu, torch_version, *flags, *paths]).encode())
    for source in sources:
        digest.update(hashlib.sha256(source).digest())
    return digest.hexdigest()[:12]


_CFLAGS = ["-O3", "-march=native", "-fopenmp"]
_LDFLAGS = ["-fopenmp"]


def _build_name() -> str:
    """The extension's name, and so its build-cache folder (see build_key)."""
    import torch
    from torch.utils.cpp_extension import include_paths

    sources = []
    for path in [*_SOURCES, *_HEADERS]:
        with open(path, "rb") as f:
            sources.append(f.read())
    cpu = cpu_fingerprint(read_cpuinfo(), platform.machine())
    paths = [os.path.dirname(_SOURCES[0]), *include_paths()]
    return f"vivace_cpu_kernels_{build_key(cpu, sources, _CFLAGS + _LDFLAGS, torch.__version__, paths)}"


@functools.cache
def load_cpu_ops() -> ModuleType | None:
    """The compiled module, or None (with a warning) if no compiler is available here."""
    if os.environ.get("VIVACE_NO_CPU_OPS"):
        return None
    try:
        from torch.utils.cpp_extension import load

        name = _build_name()
        _clear_stale_lock(name)
        _announce_if_compiling(name)
        return load(
            name=name,
            sources=_SOURCES,
            extra_cflags=_CFLAGS,
            extra_ldflags=_LDFLAGS,
            verbose=False,
        )
    except Exception as exc:  # no compiler or ninja: the torch path still works, only slower
        log.warning("C++ CPU ops unavailable (%s); using the torch reference paths", exc)
        return None


STALE_LOCK_SECONDS = 600


def is_stale_lock(lock_mtime: float, newest_build_file_mtime: float, now: float, builder_running: bool) -> bool:
    """A build lock nobody has worked under for STALE_LOCK_SECONDS and no builder is running in: its
    builder was killed mid-build. (A slow build on a loaded machine can write no object for longer.)"""
    return not builder_running and now - max(lock_mtime, newest_build_file_mtime) > STALE_LOCK_SECONDS


def builder_running_in(folder: str) -> bool:
    """Whether a process works in `folder` (torch runs ninja there); False where /proc cannot tell."""
    target = os.path.realpath(folder)
    try:
        pids = [entry.name for entry in os.scandir("/proc") if entry.name.isdigit()]
    except OSError:
        return False
    for pid in pids:
        try:
            if os.readlink(f"/proc/{pid}/cwd") == target:
                return True
        except OSError:  # gone, or not ours to read
            continue
    return False


def _clear_stale_lock(name: str) -> None:
    """Remove a build lock left by a killed build; torch's builder would otherwise wait on it forever."""
    import time

    from torch.utils.cpp_extension import _get_build_directory

    folder = _get_build_directory(name, verbose=False)
    lock = os.path.join(folder, "lock")
    try:
        newest = max((entry.stat().st_mtime for entry in os.scandir(folder) if entry.name != "lock"), default=0.0)
        if is_stale_lock(os.path.getmtime(lock), newest, time.time(), builder_running_in(folder)):
            log.warning("removing a stale build lock %s (no build activity for %d s)", lock, STALE_LOCK_SECONDS)
            os.remove(lock)
    except FileNotFoundError:  # no lock (the usual case), or another process just took it away
        pass


def _announce_if_compiling(name: str) -> None:
    """One line on stderr when the build below must compile (no built module newer than every source)."""
    from torch.utils.cpp_extension import _get_build_directory

    built = os.path.join(_get_build_directory(name, verbose=False), f"{name}.so")
    newest = max(os.path.getmtime(path) for path in _SOURCES)
    if not os.path.exists(built) or os.path.getmtime(built) < newest:
        print(
            "vivace: compiling the C++ CPU kernels (once per machine; a few minutes; "
            "`bash scripts/setup.sh` does it ahead)...",
            file=sys.stderr,
            flush=True,
        )
