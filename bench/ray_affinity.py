"""Cache-affinity routing vs Ray Serve's power of two choices, on a multi-turn chat workload.

Starts a local Ray (2 CPUs) and deploys vivace three times in one run, one after the other: one
replica (the reference hit ratio), then two single-thread replicas behind Ray's default router
(`pow2`) and behind vivace's cache-affinity router (`affinity`). Each run plays the same workload:
CONVERSATIONS chats of TURNS turns, all conversations at once (interleaved), each turn's prompt the
whole history plus a new user message. It prints the prefix-cache hit ratio (from the deployment's
/metrics) and the client-side TTFT p50/p99 of each router, side by side.

    python bench/ray_affinity.py                         # 32 conversations x 6 turns
    python bench/ray_affinity.py --conversations 16 --turns 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WORDS = (
    "river stone garden light window paper music bridge forest morning engine story winter coffee "
    "mountain letter silver market ocean shadow harbor candle signal travel orange planet thunder "
    "library meadow lantern whisper castle valley journey mirror autumn compass feather"
).split()


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def _hit_ratio(base_url: str) -> tuple[float, float]:
    """(prefix-cache hits, queries) in tokens, over every replica."""
    values = {}
    for family in text_string_to_metric_families(httpx.get(f"{base_url}/metrics", timeout=60).text):
        for s in family.samples:
            if s.labels.get("replica") == "all" and s.name in (
                "vivace_prefix_cache_hits_total",
                "vivace_prefix_cache_queries_total",
            ):
                values[s.name] = s.value
    return values["vivace_prefix_cache_hits_total"], values["vivace_prefix_cache_queries_total"]


async def _conversation(
    client: httpx.AsyncClient, base_url: str, c: int, turns: int, max_tokens: int, ttfts: list[float]
) -> None:
    rng = random.Random(c)
    messages = [{"role": "user", "content": " ".join(_sentence(rng, 12) for _ in range(6))}]
    for _ in range(turns):
        body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "stream": True}
        sent = time.perf_counter()
        first = None
        reply = []
        async with client.stream("POST", f"{base_url}/v1/chat/completions", json=body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    raise RuntimeError(chunk["error"])
                text = "".join(ch["delta"].get("content") or "" for ch in chunk["choices"])
                if text and first is None:
                    first = time.perf_counter() - sent
                reply.append(text)
        ttfts.append(first if first is not None else time.perf_counter() - sent)
        messages = [
            *messages,
            {"role": "assistant", "content": "".join(reply)},
            {"role": "user", "content": _sentence(rng, 14)},
        ]


async def _workload(base_url: str, conversations: int, turns: int, max_tokens: int) -> tuple[list[float], float]:
    ttfts: list[float] = []
    start = time.perf_counter()
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=conversations + 4)) as client:
        await asyncio.gather(
            *(_conversation(client, base_url, c, turns, max_tokens, ttfts) for c in range(conversations))
        )
    return ttfts, time.perf_counter() - start


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=32)
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--kv-mb", type=int, default=256, help="KV cache per replica (MiB)")
    parser.add_argument("--port", type=int, default=8790)
    args = parser.parse_args()

    import ray
    from ray import serve

    from vivace.ray_serve.launch import APP_NAME, build_app
    from vivace.ray_serve.replica import ReplicaSpec

    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")  # other processes' memory is not Ray's to police
    ray.init(num_cpus=2, object_store_memory=200 * 2**20, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    base_url = f"http://127.0.0.1:{args.port}"
    spec = ReplicaSpec(
        None, "smollm2", {"num_threads": 1, "kv_cache_memory_bytes": args.kv_mb << 20, "max_num_seqs": 32}
    )
    rows = []
    try:
        for label, replicas, router in (
            ("1 replica", 1, "pow2"),
            ("2 replicas, pow2", 2, "pow2"),
            ("2 replicas, affinity", 2, "affinity"),
        ):
            serve.run(build_app(spec, replicas, router), name=APP_NAME, route_prefix="/")
            ttfts, wall = asyncio.run(_workload(base_url, args.conversations, args.turns, args.max_tokens))
            hits, queries = _hit_ratio(base_url)
            rows.append((label, hits / queries, statistics.median(ttfts), _percentile(ttfts, 0.99), wall))
            print(
                f"{label}: hit ratio {hits / queries:.3f}, TTFT p50 {rows[-1][2]:.3f} s, p99 {rows[-1][3]:.3f} s, {wall:.0f} s",
                flush=True,
            )
            serve.delete(APP_NAME)
    finally:
        serve.shutdown()
        ray.shutdown()
    single = rows[0][1]
    print(f"\n{args.conversations} conversations x {args.turns} turns, {args.max_tokens} tokens per reply\n")
    print("| deployment | prefix-cache hit ratio | vs 1 replica | TTFT p50 (s) | TTFT p99 (s) | wall (s) |")
    print("|---|---|---|---|---|---|")
    for label, ratio, p50, p99, wall in rows:
        print(f"| {label} | {ratio:.3f} | {ratio / single:.2f} | {p50:.3f} | {p99:.3f} | {wall:.0f} |")
    pow2, affinity = rows[1], rows[2]
    print(
        f"\naffinity / pow2: TTFT p50 {affinity[2] / pow2[2]:.2f}x, p99 {affinity[3] / pow2[3]:.2f}x; hit ratio {affinity[1] / single:.2f} of one replica's"
    )


if __name__ == "__main__":
    main()
