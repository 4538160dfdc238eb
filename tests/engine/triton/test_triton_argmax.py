"""The Triton row argmax against torch's, ties and masked rows included."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (pip install triton); kernel tests skipped")

from vivace.engine.kernels.triton_argmax import CHUNK, argmax_rows  # noqa: E402


@pytest.mark.parametrize("rows,width", [(1, 50), (3, 3 * CHUNK + 17), (2, CHUNK)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_argmax_rows_matches_torch(rows, width, dtype):
    gen = torch.Generator().manual_seed(rows * width)
    x = torch.randn(rows, width, generator=gen).to(dtype)
    got = argmax_rows(x)
    assert got.dtype == torch.int64
    assert torch.equal(got, x.argmax(dim=-1))


def test_the_first_of_tied_maxima_wins_across_chunks():
    x = torch.zeros(3, 3 * CHUNK)
    x[0, [CHUNK + 5, 5, 2 * CHUNK]] = 4.0  # tied in three chunks: the first column
    x[1, [2 * CHUNK + 1, 2 * CHUNK + 9]] = 2.0  # tied in one chunk
    x[2] = float("-inf")  # a fully masked row: index 0, as torch
    x[2, -1] = float("-inf")
    assert argmax_rows(x).tolist() == [5, 2 * CHUNK + 1, 0] == x.argmax(dim=-1).tolist()


def test_a_strided_row_view_and_other_shapes():
    wide = torch.randn(4, 2 * CHUNK + 3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(argmax_rows(wide[::2, 1:]), wide[::2, 1:].argmax(dim=-1))
    assert torch.equal(argmax_rows(wide[0]), wide[0].argmax(dim=-1))  # 1-D: torch's
