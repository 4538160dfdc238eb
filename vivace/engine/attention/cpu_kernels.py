"""C++ CPU kernels, compiled on first use with torch's extension builder; None when unavailable.

The torch backend stays the reference: these kernels must give its results (tested).
"""

from __future__ import annotations

import functools
import logging
import os
from types import ModuleType

log = logging.getLogger(__name__)

_SOURCES = [os.path.join(os.path.dirname(__file__), "csrc", name) for name in ("paged_decode.cpp", "int8_linear.cpp")]


@functools.cache
def load_cpu_kernels() -> ModuleType | None:
    """The compiled module, or None (with a warning) if no compiler is available here."""
    if os.environ.get("VIVACE_NO_CPU_KERNELS"):
        return None
    try:
        from torch.utils.cpp_extension import load

        return load(
            name="vivace_cpu_kernels",
            sources=_SOURCES,
            extra_cflags=["-O3", "-march=native", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as exc:  # no compiler or ninja: the torch path still works, only slower
        log.warning("CPU attention kernel unavailable (%s); using the torch reference path", exc)
        return None
