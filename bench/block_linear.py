"""The compiled linear on GGUF blocks alone: microseconds per call and per activation row.

Shapes of the default model (SmolLM2-135M: a 1536 x 576 feed-forward matrix in Q4_1; its tied
49152 x 576 LM head in Q8_0) and a larger 8192 x 1536 Q4_1 one, at 1, 2, 6, 32 and 256 rows. The LM
head's 30 MB can stay in a 32 MB last-level cache between calls, which a model step, reading every
layer's weights in turn, never lets it do: `--copies 3` takes three copies of each matrix in turn, so
the head is read from memory. Best of `--rounds` timed loops per case. To put two versions of the
kernel side by side, run it through bench/ab.sh, which alternates the two trees:

    python bench/block_linear.py
    python bench/block_linear.py --rows 1,2,4,6,32 --copies 3
    bash bench/ab.sh d4e3574 2 .venv/bin/python bench/block_linear.py

`--model-pass` instead times one decode step's worth of the packaged model's linears: every block
matrix of the loaded model called once in turn on `--rows` activation rows (default one), the layers'
matrices and the LM head apart; at one row beside the physical floor for those bytes (the read
bandwidth of two threads summing a 256 MB tensor).

    python bench/block_linear.py --model-pass
    python bench/block_linear.py --model-pass --rows 1,8,32
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import gguf
import numpy as np
import torch

from vivace.engine.cpu_ops import load_cpu_ops

SHAPES = [("ffn 1536x576", 1536, 576, 3), ("lm_head 49152x576", 49152, 576, 8), ("large 8192x1536", 8192, 1536, 3)]
TYPE_NAMES = {3: "Q4_1", 8: "Q8_0"}


def blocks(n: int, k: int, qtype: int) -> torch.Tensor:
    weight = (torch.randn(n, k) * 0.05).numpy()
    return torch.from_numpy(np.ascontiguousarray(gguf.quants.quantize(weight, gguf.GGMLQuantizationType(qtype))))


def time_call(x: torch.Tensor, data: torch.Tensor, qtype: int, rounds: int, copies: int = 1) -> float:
    """Best seconds per call over `rounds` loops of enough calls to take a few milliseconds; with `copies`
    > 1, calls take that many copies of the matrix in turn, so a matrix larger than a third of the CPU's
    last-level cache is read from memory, as in a model step."""
    ops = torch.ops.vivace_cpu
    if hasattr(ops, "block_tiles"):  # the kernel reads its own tiled layout (since 2026-12-03)
        tiled = [ops.block_tiles(data, qtype) for _ in range(copies)]
        rows, turn = data.shape[0], itertools.count()

        def op(x: torch.Tensor, _data: torch.Tensor, qtype: int, bias: None) -> torch.Tensor:
            return ops.block_linear(x, tiled[next(turn) % copies], qtype, rows, bias)
    else:
        op = ops.block_linear
    for _ in range(3):
        op(x, data, qtype, None)
    start = time.perf_counter()
    op(x, data, qtype, None)
    calls = max(3, int(0.02 / max(time.perf_counter() - start, 1e-6)))
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            op(x, data, qtype, None)
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def model_pass(rounds: int, row_counts: list[int]) -> None:
    """Every block matrix of the packaged model called once in turn on M activation rows (so each is read
    from memory, as in a model step), per M: the layers' matrices and the LM head timed apart, best of
    `rounds` passes; at one row also against the bytes' floor."""
    import gc
    import warnings

    from vivace.engine.llm import LLM
    from vivace.engine.models.linear import BlockQuantLinear

    llm = LLM()
    with warnings.catch_warnings():  # gc.get_objects() meets deprecated torch objects whose isinstance warns
        warnings.simplefilter("ignore")
        layers = [o for o in gc.get_objects() if isinstance(o, BlockQuantLinear)]
    sizes = [layer.tiles.numel() for layer in layers]
    total = sum(sizes)
    head = sizes.index(max(sizes))  # the LM head (the tied embedding): the largest matrix
    print(f"{len(layers)} block matrices, {total / 1e6:.1f} MB, the largest (LM head) {sizes[head] / 1e6:.1f} MB")
    print("| rows | layers' matrices, ms per pass | LM head, ms | all, ms |\n|---|---|---|---|")
    for m in row_counts:
        inputs = [torch.randn(m, layer.shape[1]) for layer in layers]
        best_layers = best_head = float("inf")
        for _ in range(rounds):
            layers_s = head_s = 0.0
            for i, (layer, x) in enumerate(zip(layers, inputs, strict=True)):
                start = time.perf_counter()
                layer(x)
                if i == head:
                    head_s += time.perf_counter() - start
                else:
                    layers_s += time.perf_counter() - start
            best_layers, best_head = min(best_layers, layers_s), min(best_head, head_s)
        print(f"| {m} | {best_layers * 1e3:.2f} | {best_head * 1e3:.2f} | {(best_layers + best_head) * 1e3:.2f} |")
        if m == 1:
            one_row = best_layers + best_head
    if 1 in row_counts:
        big = torch.ones(64 * 2**20)  # 256 MB
        read = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            big.sum()
            read = min(read, time.perf_counter() - start)
        bandwidth = big.numel() * 4 / read
        print(
            f"one row: {one_row * 1e3:.2f} ms ({total / one_row / 1e9:.1f} GB/s); "
            f"floor at {bandwidth / 1e9:.1f} GB/s (torch.sum over 256 MB): {total / bandwidth * 1e3:.2f} ms"
        )
    del llm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--rows", default=None, help="activation rows, comma-separated (default 1,2,6,32,256; --model-pass: 1)"
    )
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--copies", type=int, default=1, help="copies of each matrix taken in turn (3: the LM head is read from memory)"
    )
    ap.add_argument("--model-pass", action="store_true", help="the packaged model's matrices in turn instead")
    args = ap.parse_args()
    if load_cpu_ops() is None:
        raise SystemExit("no C++ compiler here: the compiled kernels are not available")
    torch.set_num_threads(args.threads)
    if args.model_pass:
        model_pass(args.rounds, [int(r) for r in (args.rows or "1").split(",")])
        return
    torch.manual_seed(0)
    results = []
    print("| matrix | type | rows | us per call | us per row |\n|---|---|---|---|---|")
    for name, n, k, qtype in SHAPES:
        data = blocks(n, k, qtype)
        for m in (int(r) for r in (args.rows or "1,2,6,32,256").split(",")):
            seconds = time_call(torch.randn(m, k), data, qtype, args.rounds, args.copies)
            results.append({"matrix": name, "type": TYPE_NAMES[qtype], "rows": m, "us_per_call": seconds * 1e6})
            print(f"| {name} | {TYPE_NAMES[qtype]} | {m} | {seconds * 1e6:.1f} | {seconds * 1e6 / m:.1f} |", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
