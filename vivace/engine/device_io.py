"""Host-to-device copies that never stall the host: values go through pinned memory, asynchronously.

A copy from ordinary (pageable) host memory makes CUDA wait for the stream first, so a step that
uploaded its inputs that way would block on the GPU work queued before it. On CPU these are plain
tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def upload(values: Sequence | torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """`values` (a list or a host tensor) as a tensor on `device`, copied without blocking the host."""
    host = values.to(dtype) if isinstance(values, torch.Tensor) else torch.tensor(values, dtype=dtype)
    if device.type != "cuda":
        return host.to(device)
    # The caching host allocator keeps the pinned block alive until the copy has run.
    return host.pin_memory().to(device, non_blocking=True)
