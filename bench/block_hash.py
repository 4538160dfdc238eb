"""Cost of a prefix-cache block hash: sha256 (what the KV cache manager uses) vs Python's hash().

Each full block of a prompt is hashed once, chained over its parent; this times both over the
same random token blocks, alternating rounds, and prints microseconds per block side by side.

    python bench/block_hash.py                 # block size 16, 20,000 blocks, 5 rounds
    python bench/block_hash.py --block-size 32
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vivace.engine.kv_cache_manager import block_hash  # noqa: E402


def _sha256_chain(blocks: list[list[int]]) -> None:
    parent = b""
    for tokens in blocks:
        parent = block_hash(parent, tokens)


def _builtin_chain(blocks: list[list[int]]) -> None:
    parent = 0
    for tokens in blocks:
        parent = hash((parent, tuple(tokens)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--blocks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(0)
    blocks = [[rng.randrange(49_152) for _ in range(args.block_size)] for _ in range(args.blocks)]
    best = {"sha256": float("inf"), "hash()": float("inf")}
    for _ in range(args.rounds):
        for name, chain in (("sha256", _sha256_chain), ("hash()", _builtin_chain)):
            start = time.perf_counter()
            chain(blocks)
            best[name] = min(best[name], (time.perf_counter() - start) / args.blocks)
    print(f"block size {args.block_size}, {args.blocks:,} blocks, best of {args.rounds} rounds")
    for name, seconds in best.items():
        print(f"  {name:7s} {seconds * 1e6:6.2f} us/block  ({seconds * 1e6 / args.block_size * 1000:6.1f} ns/token)")
    print(f"  sha256 / hash() = {best['sha256'] / best['hash()']:.2f}x")


if __name__ == "__main__":
    main()
