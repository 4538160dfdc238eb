"""Tree attention against plain attention over each node's own path: shared by every backend's tests."""

from __future__ import annotations

import random

import torch

from vivace.engine.attention.base import AttentionBackend
from vivace.engine.config import SamplingParams
from vivace.engine.scheduler import ScheduledBatch, ScheduledSeq
from vivace.engine.sequence import Sequence
from vivace.engine.speculative.tree import DraftTree

BS = 16
# Root's children 0, 1, 2; 0's children 3, 4; 1's child 5; 3's child 6; 6's child 7.
TREE = DraftTree([11, 12, 13, 14, 15, 16, 17, 18], [-1, -1, -1, 0, 0, 1, 3, 6])


def check_tree_attention(backend: AttentionBackend, context: int, heads: int, kv_heads: int) -> None:
    """Each node's output equals plain softmax attention over the context then its ancestors' keys and its own."""
    gen = torch.Generator().manual_seed(context)
    d, n = 32, len(TREE)
    root = context - 1  # the root row is the sequence's last token, at the last context position
    total = context + n
    table = random.Random(context).sample(range(1, 12), -(-total // BS))
    seq = Sequence(0, "r", 0, list(range(context)), context, SamplingParams(), 0, block_table=table)
    batch = ScheduledBatch(prefills=[ScheduledSeq(seq, root, 1 + n, TREE.tokens, TREE)])
    device = backend.device
    k_cache = torch.zeros(12 * BS, kv_heads, d, device=device)
    v_cache = torch.zeros(12 * BS, kv_heads, d, device=device)
    k_all = torch.randn(total, kv_heads, d, generator=gen)  # storage position p's key (nodes at context + j)
    v_all = torch.randn(total, kv_heads, d, generator=gen)
    slots = torch.tensor([table[p // BS] * BS + p % BS for p in range(total)])
    k_cache[slots[:root].to(device)] = k_all[:root].to(device)
    v_cache[slots[:root].to(device)] = v_all[:root].to(device)
    q = torch.randn(1 + n, heads, d, generator=gen)
    meta = backend.build_metadata(batch, slots[root:total], 0)
    out = backend.forward(
        q.to(device), k_all[root:].to(device), v_all[root:].to(device), k_cache, v_cache, meta, 0.2
    ).cpu()
    group = heads // kv_heads
    for row in range(1 + n):
        node = row - 1
        keys = list(range(context)) + [context + j for j in range(n) if j == node or j in _ancestors(node)]
        for h in range(heads):
            kk = k_all[keys, h // group].double()
            vv = v_all[keys, h // group].double()
            weights = torch.softmax(kk @ q[row, h].double() * 0.2, dim=0)
            torch.testing.assert_close(out[row, h].double(), weights @ vv, atol=2e-5, rtol=1e-4)


def _ancestors(node: int) -> set[int]:
    found = set()
    while node >= 0 and TREE.parents[node] >= 0:
        node = TREE.parents[node]
        found.add(node)
    return found
