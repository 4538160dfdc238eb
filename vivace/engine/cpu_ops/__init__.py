"""C++ CPU ops (paged decode attention and the K/V write before it, fused int8 linear, the linear on GGUF
4/8-bit blocks (torch.ops.vivace_cpu.block_linear), RMSNorm alone and after the residual add, rotary,
SwiGLU, row argmax), compiled on first use with
torch's extension builder; None when no compiler is available. Each has a torch reference it must match (tested).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from types import ModuleType

log = logging.getLogger(__name__)

_SOURCES = [
    os.path.join(os.path.dirname(__file__), "csrc", name)
    for name in (
        "paged_decode.cpp",
        "int8_linear.cpp",
        "rms_norm.cpp",
        "argmax.cpp",
        "elementwise.cpp",
        "store_kv.cpp",
        "block_linear.cpp",
    )
]


@functools.cache
def load_cpu_ops() -> ModuleType | None:
    """The compiled module, or None (with a warning) if no compiler is available here."""
    if os.environ.get("VIVACE_NO_CPU_OPS"):
        return None
    try:
        from torch.utils.cpp_extension import load

        _announce_if_compiling("vivace_cpu_kernels")
        return load(
            name="vivace_cpu_kernels",
            sources=_SOURCES,
            extra_cflags=["-O3", "-march=native", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as exc:  # no compiler or ninja: the torch path still works, only slower
        log.warning("C++ CPU ops unavailable (%s); using the torch reference paths", exc)
        return None


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
