"""C++ CPU ops (paged decode attention and the K/V write before it, fused int8 linear, RMSNorm alone
and after the residual add, rotary, SwiGLU, row argmax), compiled on first use with
torch's extension builder; None when no compiler is available. Each has a torch reference it must match (tested).
"""

from __future__ import annotations

import functools
import logging
import os
from types import ModuleType

log = logging.getLogger(__name__)

_SOURCES = [
    os.path.join(os.path.dirname(__file__), "csrc", name)
    for name in ("paged_decode.cpp", "int8_linear.cpp", "rms_norm.cpp", "argmax.cpp", "elementwise.cpp", "store_kv.cpp")
]


@functools.cache
def load_cpu_ops() -> ModuleType | None:
    """The compiled module, or None (with a warning) if no compiler is available here."""
    if os.environ.get("VIVACE_NO_CPU_OPS"):
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
        log.warning("C++ CPU ops unavailable (%s); using the torch reference paths", exc)
        return None
