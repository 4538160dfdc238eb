"""`zeroed` (device_io.py): the KV cache's zero-filled allocation, whose CPU pages the OS zeroes on first touch,
and `prefault`, which commits them in the background."""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import sys

import numpy as np
import pytest
import torch

from vivace.engine.device_io import prefault, zeroed


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int8])
def test_zeroed_is_a_writable_zero_tensor_of_the_shape_and_dtype(dtype):
    shape = (2, 3, 1000, 5, 8)
    t = zeroed(shape, dtype, torch.device("cpu"))
    assert t.shape == shape and t.dtype == dtype and t.is_contiguous()
    assert not t.any()
    t[1, 2, 999] = 1
    t.index_copy_(2, torch.tensor([7]), torch.ones(2, 3, 1, 5, 8, dtype=dtype))
    assert int(t.count_nonzero()) == 5 * 8 + 2 * 3 * 5 * 8


def _fresh_cpu_tensor(size: int) -> tuple[torch.Tensor, mmap.mmap]:
    """A uint8 tensor over a new anonymous mapping: none of its pages resident yet, whatever the allocator holds."""
    area = mmap.mmap(-1, size)
    return torch.from_numpy(np.frombuffer(area, dtype=np.uint8)), area


def _page_span(t: torch.Tensor) -> tuple[int, int]:
    """The first page-aligned address of the pages holding the tensor's bytes, and how many pages they are."""
    page = os.sysconf("SC_PAGE_SIZE")
    first = t.data_ptr() // page * page
    return first, (t.data_ptr() + t.numel() * t.element_size() - first + page - 1) // page


def _resident_pages(t: torch.Tensor) -> int:
    """How many of the pages holding the tensor's bytes are in memory (mincore(2))."""
    first, pages = _page_span(t)
    vec = (ctypes.c_ubyte * pages)()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    assert libc.mincore(first, pages * os.sysconf("SC_PAGE_SIZE"), vec) == 0, os.strerror(ctypes.get_errno())
    return sum(v & 1 for v in vec)


def _kernel_populates() -> bool:
    """MADV_POPULATE_WRITE came with Linux 5.14."""
    major, minor = (int(part) for part in platform.release().split(".")[:2])
    return sys.platform == "linux" and (major, minor) >= (5, 14)


@pytest.mark.skipif(not _kernel_populates(), reason="needs Linux 5.14+ (MADV_POPULATE_WRITE)")
def test_prefault_commits_the_pages_and_keeps_what_is_written_meanwhile():
    size = 64 << 20
    t, area = _fresh_cpu_tensor(size)
    pages = size // os.sysconf("SC_PAGE_SIZE")
    assert _resident_pages(t) < pages // 10
    thread = prefault(t)
    assert thread is not None
    spots = torch.tensor([0, 12345, size // 2, size - 1])
    t[spots] = 7  # written while the pages are being committed (a few pages: the rest is the thread's)
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert _resident_pages(t) == pages
    assert t[spots].eq(7).all() and int(t.count_nonzero()) == len(spots)
    del t
    area.close()


def test_prefault_ends_when_the_tensor_is_freed():
    t = zeroed((512 << 20,), torch.uint8, torch.device("cpu"))
    thread = prefault(t)
    if thread is None:
        pytest.skip("prefault is Linux-only")
    del t
    thread.join(timeout=120)
    assert not thread.is_alive()


def test_prefault_starts_nothing_for_a_tensor_off_the_cpu():
    assert prefault(torch.empty(1 << 20, device="meta")) is None
    assert prefault(torch.empty(0)) is None


_EXIT_WHILE_PREFAULTING = """
import atexit, threading
# Registered before vivace's own exit hook, so it runs after it (atexit is last in, first out).
atexit.register(lambda: print("prefault threads alive at exit:", sum(
    t.name == "vivace-prefault" and t.is_alive() for t in threading.enumerate())))
import torch
from vivace.engine.device_io import prefault, zeroed
pool = zeroed((1 << 31,), torch.uint8, torch.device("cpu"))
print("started:", prefault(pool) is not None, flush=True)
"""


def test_an_interpreter_exiting_mid_prefault_stops_the_thread_first_and_exits_cleanly():
    """Exit while 2 GiB are still being committed: the thread is stopped and joined before finalization (a
    daemon thread left running there could free the tensor and abort the process in torch's deleter)."""
    import subprocess

    proc = subprocess.run([sys.executable, "-c", _EXIT_WHILE_PREFAULTING], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    if "started: False" in proc.stdout:
        pytest.skip("prefault is Linux-only")
    assert "started: True" in proc.stdout
    assert "prefault threads alive at exit: 0" in proc.stdout, proc.stdout
    assert "terminate" not in proc.stderr


@pytest.mark.skipif(not _kernel_populates(), reason="needs Linux 5.14+ (MADV_POPULATE_WRITE)")
def test_the_runner_keeps_the_thread_committing_its_kv_pool_and_once_it_ends_the_pool_is_resident(llm):
    runner = llm.engine.runner
    thread = runner.kv_prefault
    assert thread is not None and thread.name == "vivace-prefault"
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert _resident_pages(runner.kv_cache) == _page_span(runner.kv_cache)[1]
