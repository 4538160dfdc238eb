"""The batched sampler alone: milliseconds per `sample()` call on [rows, vocab] float32 logits (CPU).

Rows of the default model's vocabulary (49,152) at 1 and 32 rows: greedy, temperature 0.8, and
temperature 0.8 with top_p 0.95; unseeded rows (one generator for the batch) and seeded rows (one
each). Best of `--rounds` timed loops. Two versions side by side:

    python bench/sampler.py
    bash bench/ab.sh HEAD~1 2 .venv/bin/python bench/sampler.py
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from vivace.engine.config import SamplingParams
from vivace.engine.sampler import sample
from vivace.engine.sampling_batch import SamplingBatch, make_generator

CASES = [  # (label, params, seeded)
    ("greedy", SamplingParams(temperature=0.0), False),
    ("temperature 0.8", SamplingParams(temperature=0.8), False),
    ("temperature 0.8, seeded rows", SamplingParams(temperature=0.8), True),
    ("temperature 0.8, top_p 0.95", SamplingParams(temperature=0.8, top_p=0.95), False),
]


def time_case(rows: int, vocab: int, params: SamplingParams, seeded: bool, rounds: int) -> float:
    """Best milliseconds per sample() call over `rounds` loops of 20 calls."""
    generators = [make_generator(i, "cpu") if seeded else None for i in range(rows)]
    batch = SamplingBatch.build(
        [params] * rows, [[1, 2, 3]] * rows, [[4, 5]] * rows, generators, vocab, "cpu",
        eos_token_ids=[0], default_generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    logits = torch.randn(rows, vocab, generator=torch.Generator().manual_seed(rows)) * 3
    for _ in range(3):
        sample(logits, batch)
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(20):
            sample(logits, batch)
        best = min(best, (time.perf_counter() - start) / 20)
    return best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results = []
    print("| case | rows | ms per call |\n|---|---|---|")
    for label, params, seeded in CASES:
        for rows in args.rows:
            ms = time_case(rows, args.vocab, params, seeded, args.rounds)
            results.append({"case": label, "rows": rows, "ms": round(ms, 3)})
            print(f"| {label} | {rows} | {ms:.2f} |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
