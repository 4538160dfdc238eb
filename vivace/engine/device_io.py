"""Host-to-device copies that never stall the host (values go through pinned memory, asynchronously), and
zero-filled allocations.

A copy from ordinary (pageable) host memory makes CUDA wait for the stream first, so a step that
uploaded its inputs that way would block on the GPU work queued before it. On CPU these are plain
tensors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


def upload(values: Sequence | torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """`values` (a list or a host tensor) as a tensor on `device`, copied without blocking the host."""
    host = values.to(dtype) if isinstance(values, torch.Tensor) else torch.tensor(values, dtype=dtype)
    if device.type != "cuda":
        return host.to(device)
    # The caching host allocator keeps the pinned block alive until the copy has run.
    return host.pin_memory().to(device, non_blocking=True)


def zeroed(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A zero-filled tensor; on the CPU its pages come zeroed from the OS on first touch (calloc), so a
    multi-GiB KV cache costs nothing at start-up instead of a full write."""
    if device.type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    return torch.from_numpy(np.zeros(math.prod(shape) * dtype.itemsize, dtype=np.uint8)).view(dtype).view(shape)
