"""Triton gated activations (SwiGLU, GeGLU) against the torch versions."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (pip install triton); kernel tests skipped")

from vivace.engine.kernels import torch_ops  # noqa: E402
from vivace.engine.kernels.triton_act import BLOCK, gelu_tanh_mul, silu_mul  # noqa: E402

TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


@pytest.mark.parametrize("rows,width", [(1, 64), (3, BLOCK + 5), (0, 8)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", ["silu_mul", "gelu_tanh_mul"])
def test_gated_activation_matches_torch(rows, width, dtype, name):
    gen = torch.Generator().manual_seed(rows + width)
    gate_up = (torch.randn(rows, 2 * width, generator=gen) * 4).to(dtype)
    kernel = {"silu_mul": silu_mul, "gelu_tanh_mul": gelu_tanh_mul}[name]
    expected = getattr(torch_ops, name)(gate_up)
    got = kernel(gate_up)
    assert got.shape == (rows, width) and got.dtype == dtype
    torch.testing.assert_close(got, expected, atol=TOL[dtype], rtol=TOL[dtype])


def test_gated_activation_rejects_an_odd_width():
    with pytest.raises(ValueError, match="2 \\* intermediate"):
        silu_mul(torch.zeros(2, 7))
