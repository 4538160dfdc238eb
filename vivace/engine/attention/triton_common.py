"""Small host-side helpers shared by the Triton kernels."""

from __future__ import annotations

from typing import Any

import torch
import triton.language as tl
from triton import knobs

_TL_DTYPES = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}


def dot_options(dtype: torch.dtype) -> dict[str, Any]:
    """Operand dtype and precision for tl.dot: the activations' own dtype on GPU (tensor cores).

    float32 asks for IEEE products (tf32 would lose precision the CPU path keeps). Triton's CPU
    interpreter cannot multiply bfloat16/float16 matrices (numpy has no such type), so under it the
    operands are upcast to float32: the same kernel logic, checked at float32 precision.
    """
    if dtype is torch.float32 or knobs.runtime.interpret:
        return {"DOT": tl.float32, "PRECISION": "ieee"}
    return {"DOT": _TL_DTYPES[dtype], "PRECISION": "tf32"}
