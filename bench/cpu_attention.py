"""The compiled CPU paged attention alone: microseconds per call (one layer) for decode and prefill rows.

The default model's layout (9 query / 3 KV heads of 64, float16 cache, blocks of 16), two threads.
Decodes: 1 and 32 sequences at 256 and 1,024 tokens of context, 32 sharing one 1,024-token context
(a prefix hit: the same blocks for every sequence), 1 at 4,096; 32 at 256 over 30 layers' caches in
turn, as a model step reads them (together beyond the CPU's caches, so each call reads from memory;
one tensor for all 30, allocated as the engine allocates its KV pool);
prefill: a 512-token chunk after 0 and after 3,584 cached tokens. Best of 3 timed loops of ~0.5 s
each. Two versions side by side, or two cache dtypes:

    python bench/cpu_attention.py                      # --kv-cache-dtype float16 (the CPU default)
    python bench/cpu_attention.py --kv-cache-dtype bfloat16
    bash bench/ab.sh c3b2ab2~1 2 .venv/bin/python bench/cpu_attention.py
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from vivace.engine.cpu_ops import load_cpu_ops
from vivace.engine.device_io import zeroed
from vivace.engine.model_loading import DTYPES

HEADS, KV_HEADS, HEAD_DIM, BLOCK, LAYERS = 9, 3, 64, 16, 30
CASES = [  # (label, context before the rows, rows per sequence, sequences, one block table shared by all)
    ("decode, 1 sequence, 256 context", 256, 1, 1, False),
    ("decode, 32 sequences, 256 context", 256, 1, 32, False),
    ("decode, 32 sequences, 1,024 context", 1024, 1, 32, False),
    ("decode, 32 sequences, 256 context, a layer's cache each of 30 calls (from memory)", 256, 1, 32, "layers"),
    ("decode, 32 sequences, one shared 1,024 context", 1024, 1, 32, True),
    ("decode, 1 sequence, 4,096 context", 4096, 1, 1, False),
    ("prefill, 512 rows after 0", 0, 512, 1, False),
    ("prefill, 512 rows after 3,584", 3584, 512, 1, False),
]


def cache_slots(context: int, rows: int, sequences: int) -> int:
    return (context + rows + BLOCK - 1) // BLOCK * BLOCK * sequences


def case_args(
    context: int,
    rows: int,
    sequences: int,
    shared: bool = False,
    cache: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float16,
) -> tuple:
    """`shared`: every sequence reads the same blocks (a prefix-cache hit), which stay in the CPU's caches.
    `cache`: the [2, slots, KV heads, head size] tensor to hold K and V (default: a new one of `dtype`)."""
    blocks = (context + rows + BLOCK - 1) // BLOCK
    slots = blocks * BLOCK * sequences
    if cache is None:
        cache = zeroed((2, slots, KV_HEADS, HEAD_DIM), dtype, torch.device("cpu"))
    k, v = cache[0], cache[1]
    k.copy_(torch.randn(slots, KV_HEADS, HEAD_DIM))
    v.copy_(torch.randn(slots, KV_HEADS, HEAD_DIM))
    tables = torch.randperm(blocks * sequences, dtype=torch.int32).view(sequences, blocks)  # scattered blocks
    if shared:
        tables = tables[:1].repeat(sequences, 1)
    spans = torch.tensor([(i * rows, rows, context) for i in range(sequences)], dtype=torch.int32)
    q = torch.randn(rows * sequences, HEADS, HEAD_DIM)
    return (q, k, v, tables, spans, BLOCK, HEAD_DIM**-0.5, 0, None)


def time_call(fn: object, seconds: float = 0.5) -> float:
    fn()
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        fn()
        calls += 1
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # int8 rows carry their scale (a wider row) and are left out: the cases build plain rows
    parser.add_argument("--kv-cache-dtype", choices=sorted(set(DTYPES) - {"int8"}), default="float16")
    dtype = DTYPES[parser.parse_args().kv_cache_dtype]
    ops = load_cpu_ops()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    rows = []
    print("| case | us per call |\n|---|---|")
    for label, context, n_rows, sequences, shared in CASES:
        if shared == "layers":
            # one tensor for every layer's K and V, as the engine's KV pool (device_io.zeroed: 2 MB pages
            # where the OS gives them, which the engine's cache gets too)
            pool = zeroed(
                (LAYERS, 2, cache_slots(context, n_rows, sequences), KV_HEADS, HEAD_DIM),
                dtype,
                torch.device("cpu"),
            )
            layers = [case_args(context, n_rows, sequences, cache=pool[i]) for i in range(LAYERS)]

            def each_layer(layers: list[tuple] = layers) -> None:
                for args in layers:
                    ops.paged_attention(*args)

            us = time_call(each_layer) * 1e6 / LAYERS
        else:
            args = case_args(context, n_rows, sequences, shared, dtype=dtype)
            us = time_call(lambda args=args: ops.paged_attention(*args)) * 1e6
        rows.append({"case": label, "us_per_call": us})
        print(f"| {label} | {us:,.0f} |", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
