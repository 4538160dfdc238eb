"""`zeroed` (device_io.py): the KV cache's zero-filled allocation, whose CPU pages the OS zeroes on first touch."""

from __future__ import annotations

import pytest
import torch

from vivace.engine.device_io import zeroed


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int8])
def test_zeroed_is_a_writable_zero_tensor_of_the_shape_and_dtype(dtype):
    shape = (2, 3, 1000, 5, 8)
    t = zeroed(shape, dtype, torch.device("cpu"))
    assert t.shape == shape and t.dtype == dtype and t.is_contiguous()
    assert not t.any()
    t[1, 2, 999] = 1
    t.index_copy_(2, torch.tensor([7]), torch.ones(2, 3, 1, 5, 8, dtype=dtype))
    assert int(t.count_nonzero()) == 5 * 8 + 2 * 3 * 5 * 8
