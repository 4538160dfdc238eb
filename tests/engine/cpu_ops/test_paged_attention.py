"""The C++ paged attention (vivace/engine/cpu_ops/csrc/paged_attention.cpp) on prefill and decode rows.

Against the torch reference backend (plain scaled_dot_product_attention over gathered contexts) on steps
mixing decodes and prefill chunks whose lengths cross block (16) and key-tile (32) / query-tile (16)
boundaries, with a prefix already in the cache, for MHA, GQA and MQA head layouts, sliding windows and
every KV cache dtype; and bitwise: a row's output does not depend on its batch-mates, on how its prompt
was chunked, or on whether it was decoded or prefilled.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
import torch

from vivace.engine.attention.cpu_backend import CpuAttentionBackend
from vivace.engine.attention.kv_quant import to_cache
from vivace.engine.attention.torch_backend import TorchAttentionBackend
from vivace.engine.config import SamplingParams
from vivace.engine.cpu_ops import load_cpu_ops
from vivace.engine.scheduler import ScheduledBatch, ScheduledSeq
from vivace.engine.sequence import Sequence

kernels = load_cpu_ops()
pytestmark = pytest.mark.skipif(kernels is None, reason="no C++ compiler here: the torch path is used")
BS = 16
NUM_BLOCKS = 96
CPU = torch.device("cpu")


@dataclass
class Step:
    """One scheduled step on random caches: the batch, its queries and new K/V, and the caches before it."""

    batch: ScheduledBatch
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    k_cache: torch.Tensor
    v_cache: torch.Tensor
    slots: torch.Tensor


def make_step(
    work: list[tuple[int, int, bool]], heads: int, kv_heads: int, head_dim: int, kv_dtype: torch.dtype, seed: int
) -> Step:
    """`work`: (start, num_tokens, is_decode) per sequence, each over random disjoint blocks."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    pool = list(range(NUM_BLOCKS))
    rng.shuffle(pool)
    batch = ScheduledBatch()
    slots = []
    for i, (start, n, decode) in enumerate(work):
        end = start + n
        table = [pool.pop() for _ in range(-(-end // BS))]
        seq = Sequence(i, f"r{i}", 0, list(range(end)), end, SamplingParams(), i, block_table=table)
        (batch.decodes if decode else batch.prefills).append(ScheduledSeq(seq, start, n))
    for item in batch.all():  # rows in the step's order: decodes, then prefills
        table = item.seq.block_table
        slots += [table[p // BS] * BS + p % BS for p in range(item.start, item.start + item.num_tokens)]
    rows = len(slots)
    like = torch.empty(0, dtype=kv_dtype)
    return Step(
        batch,
        torch.randn(rows, heads, head_dim, generator=gen),
        torch.randn(rows, kv_heads, head_dim, generator=gen),
        torch.randn(rows, kv_heads, head_dim, generator=gen),
        to_cache(torch.randn(NUM_BLOCKS * BS, kv_heads, head_dim, generator=gen), like),
        to_cache(torch.randn(NUM_BLOCKS * BS, kv_heads, head_dim, generator=gen), like),
        torch.tensor(slots),
    )


def attend(step: Step, backend_cls: type, window: int | None, rows: slice = slice(None)) -> torch.Tensor:
    """The step through one backend, on copies of its caches."""
    backend = (
        CpuAttentionBackend(BS, CPU, kernels) if backend_cls is CpuAttentionBackend else TorchAttentionBackend(BS, CPU)
    )
    meta = backend.build_metadata(step.batch, step.slots)
    k_cache, v_cache = step.k_cache.clone(), step.v_cache.clone()
    out = backend.forward(step.q, step.k, step.v, k_cache, v_cache, meta, step.q.shape[-1] ** -0.5, window)
    return out[rows]


@pytest.mark.parametrize("window", [None, 5, 40])
@pytest.mark.parametrize("kv_dtype", [torch.float32, torch.bfloat16, torch.float16, torch.int8])
@pytest.mark.parametrize(("heads", "kv_heads"), [(4, 4), (6, 2), (3, 1)])  # MHA, GQA, MQA
def test_prefill_matches_torch_reference(heads: int, kv_heads: int, kv_dtype: torch.dtype, window: int | None) -> None:
    work = [
        (57, 1, True),  # a decode
        (0, 83, False),  # a whole prompt: blocks, key tiles and query tiles end inside it
        (40, 33, False),  # a chunk after 40 cached tokens (a prefix hit, or chunked prefill)
        (0, 1, False),  # a one-token prompt
        (130, 16, False),  # a chunk of exactly one query tile, starting mid-key-tile
        (95, 1, True),
    ]
    step = make_step(work, heads, kv_heads, 16 * (1 + heads % 2 * 3), kv_dtype, seed=heads + kv_heads)
    got, want = attend(step, CpuAttentionBackend, window), attend(step, TorchAttentionBackend, window)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("head_dim", [12, 64])  # lanes padded, and whole lanes
def test_long_prompt_in_chunks_matches_torch_reference(head_dim: int) -> None:
    """The last chunk of a 1,000-token prompt, every row over up to 1,000 keys, with a sliding window too."""
    step = make_step([(744, 256, False)], 9, 3, head_dim, torch.bfloat16, seed=head_dim)
    for window in (None, 300):
        got, want = attend(step, CpuAttentionBackend, window), attend(step, TorchAttentionBackend, window)
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("window", [None, 21])
@pytest.mark.parametrize("kv_dtype", [torch.float32, torch.bfloat16, torch.float16, torch.int8])
@pytest.mark.parametrize(
    ("heads", "kv_heads", "head_dim"),
    # query heads per KV head 3, 4 (MQA), 1, 2, 5; head sizes of whole lanes and one that is not (12)
    [(6, 2, 64), (4, 1, 64), (2, 2, 32), (4, 2, 24), (5, 1, 64), (3, 1, 12)],
)
def test_rows_do_not_depend_on_batch_mates_chunking_or_decoding(
    heads: int, kv_heads: int, head_dim: int, kv_dtype: torch.dtype, window: int | None
) -> None:
    """Bitwise: a prompt's rows in a mixed batch, alone, split into other chunks, and every token as a decode."""
    mixed = make_step([(30, 1, True), (0, 77, False), (10, 50, False)], heads, kv_heads, head_dim, kv_dtype, seed=7)
    full = attend(mixed, CpuAttentionBackend, window)
    prompt_rows = slice(1, 78)  # rows of the 77-token prompt: after the decode
    # The caches as the mixed step left them hold every key the prompt's rows read.
    k_cache, v_cache = mixed.k_cache.clone(), mixed.v_cache.clone()
    kernels.store_kv(mixed.k, mixed.v, k_cache, v_cache, mixed.slots)
    prompt = mixed.batch.prefills[0].seq
    table = torch.tensor([prompt.block_table], dtype=torch.int32)
    q = mixed.q[prompt_rows].contiguous()
    scale = head_dim**-0.5

    def run(chunks: list[tuple[int, int]]) -> torch.Tensor:
        outs = []
        for start, n in chunks:
            spans = torch.tensor([[0, n, start]], dtype=torch.int32)
            outs.append(
                kernels.paged_attention(
                    q[start : start + n].contiguous(), k_cache, v_cache, table, spans, BS, scale, window or 0
                )
            )
        return torch.cat(outs)

    want = full[prompt_rows]
    assert torch.equal(run([(0, 77)]), want)  # alone
    assert torch.equal(run([(0, 16), (16, 45), (61, 15), (76, 1)]), want)  # other chunks, the last one a single row
    assert torch.equal(run([(p, 1) for p in range(77)]), want)  # every token decoded one by one


def test_bad_spans_are_refused() -> None:
    q = torch.randn(4, 2, 16)
    cache = torch.randn(NUM_BLOCKS * BS, 1, 16)
    table = torch.zeros(1, 2, dtype=torch.int32)
    with pytest.raises(RuntimeError, match="spans cover 3 rows"):
        kernels.paged_attention(q, cache, cache, table, torch.tensor([[0, 3, 0]], dtype=torch.int32), BS, 0.25, 0)
    with pytest.raises(RuntimeError, match="outruns its block table"):
        kernels.paged_attention(q, cache, cache, table, torch.tensor([[0, 4, 30]], dtype=torch.int32), BS, 0.25, 0)
