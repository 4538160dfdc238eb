"""The compiled C++ CPU ops against their torch references on random inputs."""

from __future__ import annotations

import random

import pytest
import torch

from vivace.engine.attention.cpu_backend import CpuAttentionBackend
from vivace.engine.attention.kv_quant import cache_row_width, to_cache
from vivace.engine.attention.torch_backend import TorchAttentionBackend
from vivace.engine.config import SamplingParams
from vivace.engine.cpu_ops import load_cpu_ops
from vivace.engine.kernels.torch_ops import rms_norm as torch_rms_norm
from vivace.engine.kernels.torch_ops import silu_mul as torch_silu_mul
from vivace.engine.scheduler import ScheduledBatch, ScheduledSeq
from vivace.engine.sequence import Sequence

kernels = load_cpu_ops()
pytestmark = pytest.mark.skipif(kernels is None, reason="no C++ compiler here: the torch path is used")


@pytest.mark.parametrize("window", [None, 3, 21])  # whole context; sliding windows inside and across blocks
@pytest.mark.parametrize("kv_dtype", [torch.float32, torch.bfloat16, torch.float16, torch.int8])
@pytest.mark.parametrize("seed", range(6))
def test_decode_kernel_matches_torch_reference(seed: int, kv_dtype: torch.dtype, window: int | None) -> None:
    rng = random.Random(seed)
    torch.manual_seed(seed)
    bs = rng.choice([1, 4, 16])
    kv_heads = rng.choice([1, 2, 3])
    heads = kv_heads * rng.choice([1, 3, 4])
    head_dim = rng.choice([16, 64])
    num_blocks = 64
    num_seqs = rng.randint(1, 6)
    lens = [rng.randint(1, 10 * bs) for _ in range(num_seqs)]
    # Random, non-contiguous, disjoint block tables.
    pool = list(range(num_blocks))
    rng.shuffle(pool)
    tables = []
    for n in lens:
        need = -(-n // bs)
        tables.append([pool.pop() for _ in range(need)])
    q = torch.randn(num_seqs, heads, head_dim)
    k_new = torch.randn(num_seqs, kv_heads, head_dim)
    v_new = torch.randn(num_seqs, kv_heads, head_dim)
    slot_mapping = torch.tensor([t[(n - 1) // bs] * bs + (n - 1) % bs for t, n in zip(tables, lens, strict=True)])
    scale = head_dim**-0.5
    batch = ScheduledBatch()
    for i, (table, n) in enumerate(zip(tables, lens, strict=True)):
        seq = Sequence(i, f"r{i}", 0, list(range(n)), n - 1, SamplingParams(), i, block_table=table)
        batch.decodes.append(ScheduledSeq(seq, n - 1, 1))
    cpu = torch.device("cpu")

    def run(use_kernel: bool) -> torch.Tensor:
        torch.manual_seed(100 + seed)
        k_cache = to_cache(torch.randn(num_blocks * bs, kv_heads, head_dim), torch.empty(0, dtype=kv_dtype))
        v_cache = to_cache(torch.randn(num_blocks * bs, kv_heads, head_dim), torch.empty(0, dtype=kv_dtype))
        backend = CpuAttentionBackend(bs, cpu, kernels) if use_kernel else TorchAttentionBackend(bs, cpu)
        meta = backend.build_metadata(batch, slot_mapping)
        return backend.forward(q, k_new, v_new, k_cache, v_cache, meta, scale, window)

    assert torch.allclose(run(True), run(False), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("rows", [1, 3, 17, 64])
def test_int8_linear_kernel_matches_torch_reference(rows: int) -> None:
    from vivace.engine.models.linear import Int8DynamicLinear

    torch.manual_seed(rows)
    weight, bias = torch.randn(200, 96), torch.randn(200)
    x = torch.randn(rows, 96) * torch.logspace(-2, 2, rows).unsqueeze(1)  # rows of very different scale
    layer = Int8DynamicLinear(weight, bias, kernels)
    fused = layer(x)
    assert torch.allclose(fused, layer.reference(x), atol=1e-4, rtol=1e-5)
    # Quantization error stays small relative to each row's own scale (per-row activation scales).
    exact = torch.nn.functional.linear(x, weight, bias)
    rel = ((fused - exact).norm(dim=1) / (exact - bias).norm(dim=1)).max().item()
    assert rel < 0.02
    # Each row is computed independently of its batch-mates.
    assert torch.equal(layer(x[-1:]), fused[-1:])


@pytest.mark.parametrize("shape", [(96, 200), (13, 7), (576, 1728), (61, 33)])
def test_small_batch_kernel_gives_onednns_exact_sums(shape: tuple[int, int]) -> None:
    """2..8 rows go through the packed VNNI kernel where it is built: integer sums, so bitwise equal."""
    from vivace.engine.models.linear import Int8DynamicLinear

    in_features, out_features = shape
    gen = torch.Generator().manual_seed(in_features)
    layer = Int8DynamicLinear(
        torch.randn(out_features, in_features, generator=gen), torch.randn(out_features, generator=gen), kernels
    )
    packed, col_sums = kernels.pack_int8_weight(layer.weight_t)
    if packed.numel():  # built with AVX512-VNNI: the packing covers every weight once
        assert torch.equal(col_sums[:out_features], layer.weight_t.sum(0, dtype=torch.int32))
    for rows in range(1, 11):
        x = torch.randn(rows, in_features, generator=gen) * torch.logspace(-2, 2, rows).unsqueeze(1)
        onednn = kernels.int8_linear(x, layer.weight_t, layer.scales, layer.bias, None, None)
        assert torch.equal(layer(x), onednn), rows
        assert torch.equal(layer(x[-1:]), onednn[-1:])  # and each row independent of its batch-mates


@pytest.mark.parametrize("shape", [(1, 576), (7, 64), (33, 1000)])
def test_rms_norm_matches_torch(shape: tuple[int, int]) -> None:
    torch.manual_seed(shape[0])
    x, weight = torch.randn(shape) * 5, torch.randn(shape[1])
    assert torch.allclose(kernels.rms_norm(x, weight, 1e-5), torch_rms_norm(x, weight, 1e-5), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", [(1, 576), (7, 64), (33, 1000)])
def test_add_rms_norm_matches_torch(shape: tuple[int, int]) -> None:
    torch.manual_seed(shape[1])
    x, residual, weight = torch.randn(shape) * 5, torch.randn(shape) * 5, torch.randn(shape[1])
    normed, summed = kernels.add_rms_norm(x, residual, weight, 1e-5)
    assert torch.equal(summed, x + residual)
    assert torch.allclose(normed, torch_rms_norm(x + residual, weight, 1e-5), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seed", range(6))
def test_rotary_matches_the_torch_rotation(seed: int) -> None:
    """On a strided view of a fused qkv row, as the model calls it, at random positions."""
    from vivace.engine.models.rope import RotaryEmbedding

    rng = random.Random(seed)
    head_dim, heads, tokens = rng.choice([16, 64, 128]), rng.randint(1, 12), rng.randint(1, 9)
    scaling = rng.choice([None, {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 64}])
    rope = RotaryEmbedding(head_dim, 256, rng.choice([1e4, 5e5]), scaling, torch.float32)
    qkv = torch.randn(tokens, (heads + 2) * head_dim, generator=torch.Generator().manual_seed(seed))
    x = qkv[:, : heads * head_dim].view(tokens, heads, head_dim)
    positions = torch.tensor([rng.randrange(256) for _ in range(tokens)])
    expected = rope.apply(x, rope.tables(positions))
    torch.testing.assert_close(kernels.rotary(x, rope.cos, rope.signed_sin, positions), expected, atol=1e-6, rtol=1e-6)
    with pytest.raises(RuntimeError, match="beyond the rotary table"):
        kernels.rotary(x, rope.cos, rope.signed_sin, positions + 256)


@pytest.mark.parametrize("shape", [(1, 2 * 1536), (5, 2 * 64), (17, 2 * 1000)])
def test_silu_mul_matches_torch(shape: tuple[int, int]) -> None:
    gate_up = torch.randn(shape, generator=torch.Generator().manual_seed(shape[0])) * 4
    assert torch.allclose(kernels.silu_mul(gate_up), torch_silu_mul(gate_up), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16, torch.float16, torch.int8])
def test_store_kv_writes_what_cast_and_index_copy_write(cache_dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    width = cache_row_width(16, cache_dtype)
    k_cache = torch.randn(64, 3, width, generator=gen).to(cache_dtype)
    v_cache = torch.randn(64, 3, width, generator=gen).to(cache_dtype)
    k, v = torch.randn(9, 3, 16, generator=gen) * 30, torch.randn(9, 3, 16, generator=gen)
    k[0, 1] = 0.0  # an all-zero row
    if cache_dtype is not torch.int8:  # NaN, infinities, a finite value that rounds to inf, ties to even
        k[1, 0, :6] = torch.tensor([float("nan"), float("inf"), -float("inf"), 3.3895e38, 1.00390625, 1.01171875])
    slots = torch.randperm(64, generator=gen)[:9]
    want_k, want_v = k_cache.clone(), v_cache.clone()
    want_k.index_copy_(0, slots, to_cache(k, k_cache))
    want_v.index_copy_(0, slots, to_cache(v, v_cache))
    kernels.store_kv(k, v, k_cache, v_cache, slots)
    # bf16 rounds as torch does; int8 rows quantize (values and scale) bit for bit as the reference
    torch.testing.assert_close(k_cache, want_k, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(v_cache, want_v, rtol=0, atol=0, equal_nan=True)
    with pytest.raises(RuntimeError, match="outside the cache"):
        kernels.store_kv(k, v, k_cache, v_cache, slots + 64)


@pytest.mark.parametrize("seed", range(8))
def test_argmax_rows_matches_torch_with_ties_infinities_and_nans(seed: int) -> None:
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    rows, width = rng.randint(1, 40), rng.choice([1, 3, 255, 256, 257, 1000, 49152])
    x = torch.randint(-3, 4, (rows, width), generator=gen).float()  # few values: many ties
    if seed % 2:
        x = torch.randn(rows, width, generator=gen)
    for r in range(rows):
        kind = rng.random()
        if kind < 0.15:
            x[r] = float("-inf")
        elif kind < 0.3:
            x[r, rng.randrange(width)] = float("nan")
            x[r, rng.randrange(width)] = float("nan")
        elif kind < 0.4:
            x[r, rng.randrange(width)] = float("inf")
    assert torch.equal(kernels.argmax_rows(x), x.argmax(dim=-1))
    assert torch.equal(kernels.argmax_rows(x.t().contiguous().t()), x.argmax(dim=-1))  # strided input
