"""Host-to-device copies that never stall the host (values go through pinned memory, asynchronously), and
zero-filled allocations.

A copy from ordinary (pageable) host memory makes CUDA wait for the stream first, so a step that
uploaded its inputs that way would block on the GPU work queued before it. On CPU these are plain
tensors.

A CPU KV cache is allocated lazily (its pages come from the OS on first write) and then committed in
the background (`prefault`), so start-up does not wait for gigabytes of page faults and the first
steps to write each block do not take them either.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import sys
import threading
import weakref
from collections.abc import Sequence

import numpy as np
import torch

from vivace.daemon_threads import start_daemon

logger = logging.getLogger(__name__)

# Linux madvise(2) advice values (include/uapi/asm-generic/mman-common.h).
_MADV_HUGEPAGE = 14
_MADV_POPULATE_WRITE = 23  # Linux 5.14+: fault the range in writable, contents unchanged
_PAGE = 4096
# Bytes committed per madvise call (two huge pages). The call holds the process's memory-map lock for
# reading, which an mmap or munmap elsewhere (a large allocation) must wait out: kept short.
_PREFAULT_CHUNK = 4 << 20


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


def prefault(tensor: torch.Tensor) -> threading.Thread | None:
    """Commit a CPU tensor's pages from a background thread, a few MiB at a time, so that the first writes
    to it take no page faults (a first write to a page of a fresh KV cache costs the fault and the
    kernel's zeroing of the page, inside a decode step). The contents are not changed
    (MADV_POPULATE_WRITE faults pages in as if written, leaving their bytes as they are), so the tensor
    may be read and written meanwhile. Transparent huge pages are asked for first (one fault per 2 MiB).
    Stops when the tensor is freed. None (nothing started) off Linux or for a tensor not on the CPU.
    """
    if sys.platform != "linux" or tensor.device.type != "cpu" or tensor.numel() == 0:
        return None
    start = (tensor.data_ptr() + _PAGE - 1) // _PAGE * _PAGE
    end = (tensor.data_ptr() + tensor.numel() * tensor.element_size()) // _PAGE * _PAGE
    if end <= start:
        return None
    owner = weakref.ref(tensor)
    stopping = threading.Event()  # set at interpreter exit (daemon_threads)
    return start_daemon(lambda: _commit_pages(owner, start, end, stopping), "vivace-prefault", stopping.set)


def _commit_pages(owner: weakref.ref[torch.Tensor], start: int, end: int, stopping: threading.Event) -> None:
    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise(start, end - start, _MADV_HUGEPAGE)  # best effort: THP off or unsupported leaves 4 KiB pages
    for at in range(start, end, _PREFAULT_CHUNK):
        if stopping.is_set():
            return
        alive = owner()  # held while its pages are advised, so the range stays mapped
        if alive is None:
            return
        size = min(_PREFAULT_CHUNK, end - at)
        if madvise(at, size, _MADV_POPULATE_WRITE) != 0:  # e.g. EINVAL before Linux 5.14: first writes fault
            logger.debug("KV cache prefault stopped: %s", os.strerror(ctypes.get_errno()))
            return
        del alive
